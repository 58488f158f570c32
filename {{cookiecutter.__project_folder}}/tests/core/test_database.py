"""The unit of work: commit on success, roll back on error; the engine, readers and driver
statements."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping

import anyio
import pytest
from fastapi import FastAPI, Request
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.database import (
    DriverStatement,
    Reader,
    create_engine,
    create_sessionmaker,
    driver_connection,
)
from app.core.errors import Conflict
from app.core.outbox import Outbox
from app.core.unit_of_work import UnitOfWork, Work
from app.settings import DatabaseSettings, OutboxSettings


@pytest.fixture
async def app(app: FastAPI, session: AsyncSession) -> FastAPI:
    """The application with routes that write a row, then succeed or fail."""
    await session.execute(text("CREATE TABLE uow_probe (note text NOT NULL)"))

    def check(note: str) -> dict[str, str]:
        if note == "conflict":
            raise Conflict("refused after writing")
        if note == "crash":
            msg = "crashed after writing"
            raise RuntimeError(msg)
        return {"note": note}

    @app.post("/probe/driver/{note}")
    async def write(note: str, request: Request) -> dict[str, str]:
        async with UnitOfWork.of(request).begin() as work:
            driver = await work.connection()
            await driver.execute("INSERT INTO uow_probe (note) VALUES ($1)", note)
            return check(note)

    @app.post("/probe/orm/{note}")
    async def write_with_the_orm(note: str, request: Request) -> dict[str, str]:
        async with UnitOfWork.of(request).begin(orm=True) as work:
            await work.session.execute(
                text("INSERT INTO uow_probe (note) VALUES (:note)"), {"note": note}
            )
            return check(note)

    return app


# Both kinds of unit of work: on the driver's connection (a route's default) and with the ORM.
KINDS = pytest.mark.parametrize("kind", ["driver", "orm"])


async def notes(session: AsyncSession) -> list[str]:
    return list((await session.scalars(text("SELECT note FROM uow_probe ORDER BY note"))).all())


@KINDS
async def test_successful_request_commits(
    client: AsyncClient, session: AsyncSession, kind: str
) -> None:
    response = await client.post(f"/probe/{kind}/kept")

    assert response.status_code == 200
    assert await notes(session) == ["kept"]


@KINDS
async def test_domain_error_rolls_back_what_the_handler_wrote(
    client: AsyncClient, session: AsyncSession, kind: str
) -> None:
    response = await client.post(f"/probe/{kind}/conflict")

    assert response.status_code == 409
    assert await notes(session) == []


@KINDS
async def test_crash_rolls_back_what_the_handler_wrote(
    client: AsyncClient, session: AsyncSession, kind: str
) -> None:
    response = await client.post(f"/probe/{kind}/crash")

    assert response.status_code == 500
    assert await notes(session) == []


@KINDS
async def test_failed_request_does_not_undo_an_earlier_one(
    client: AsyncClient, session: AsyncSession, kind: str
) -> None:
    await client.post(f"/probe/{kind}/first")
    await client.post(f"/probe/{kind}/conflict")

    assert await notes(session) == ["first"]


async def test_connections_have_the_default_statement_and_lock_timeouts(database_url: str) -> None:
    # API and worker processes both build their engine with create_engine (the worker through
    # the app's lifespan), so both get these.
    engine = create_engine(DatabaseSettings(url=SecretStr(database_url)), application_name="test")
    async with engine.connect() as connection:
        statement_timeout = await connection.scalar(text("SHOW statement_timeout"))
        lock_timeout = await connection.scalar(text("SHOW lock_timeout"))
        application_name = await connection.scalar(text("SHOW application_name"))
    await engine.dispose()

    assert (statement_timeout, lock_timeout, application_name) == ("30s", "5s", "test")


async def test_a_reader_runs_each_statement_in_a_transaction_of_its_own(
    engine: AsyncEngine,
) -> None:
    # Autocommit: each statement is a transaction of its own (two ids), so no BEGIN or COMMIT
    # round trips; a session's connection runs both in one transaction (one id).
    transaction_id = "SELECT pg_current_xact_id()::text"
    async with Reader.on(engine).connection() as connection:
        autocommit = {await connection.fetchval(transaction_id) for _ in range(2)}
    async with engine.connect() as connection:
        transactional = {await connection.scalar(text(transaction_id)) for _ in range(2)}
        await connection.rollback()

    assert len(autocommit) == 2
    assert len(transactional) == 1


async def test_a_read_gives_its_connection_back_before_the_request_ends(
    engine: AsyncEngine,
) -> None:
    gate = asyncio.Semaphore(1)
    reader = Reader.on(engine, gate)

    async with reader.connection() as connection:
        assert gate.locked(), "a read takes its connection through the gate"
        assert await connection.fetchval("SELECT 1") == 1

    assert not gate.locked()
    assert "Checked out connections: 0" in engine.pool.status(), "back in the pool"


async def test_a_cancelled_read_still_closes_its_connection_cleanly(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Returned to a full pool, an overflow connection is closed, which waits on the server. An
    # anyio cancel scope cancels every wait inside it: the close must still run to its end
    # (cut short, SQLAlchemy logs "Exception closing connection" and the socket is left).
    engine = create_engine(
        DatabaseSettings(url=SecretStr(database_url), pool_size=1, max_overflow=1),
        application_name="test",
    )
    reader = Reader.on(engine)
    try:
        async with contextlib.AsyncExitStack() as first:
            await first.enter_async_context(reader.connection())
            with anyio.CancelScope() as scope:
                async with reader.connection():  # the overflow connection
                    await first.aclose()  # the pool's own connection is back: the pool is full
                    scope.cancel()
                    await anyio.sleep(30)  # cancelled at once
        assert scope.cancelled_caught
        assert "Checked out connections: 0" in engine.pool.status()
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        async with asyncio.timeout(5), reader.connection() as connection:
            assert await connection.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()


def test_a_driver_statement_takes_values_by_name_in_the_drivers_order() -> None:
    statement = DriverStatement(
        select(literal("fixed"), bindparam("b", type_=Integer), bindparam("a", type_=String))
    )

    assert statement.sql.count("$") == 3
    assert statement.arguments(a="x", b=2) == ["fixed", 2, "x"]


def test_a_driver_statement_refuses_a_missing_or_unknown_value() -> None:
    statement = DriverStatement(select(bindparam("a", type_=Integer)))

    with pytest.raises(TypeError, match="no value for a"):
        statement.arguments()
    with pytest.raises(TypeError, match="no parameter b"):
        statement.arguments(a=1, b=2)


def test_a_driver_insert_sets_the_columns_named_and_the_python_defaults_of_the_others() -> None:
    table = Table(
        "things",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("count", Integer, default=7),
        Column("label", String, default=lambda: "made per row"),
    )

    statement = DriverStatement(insert(table), columns=["id", "label"])

    assert statement.sql.startswith("INSERT INTO things (id, count, label)")
    assert statement.arguments(id=1, label="a") == [1, 7, "a"]
    with pytest.raises(TypeError, match="label has a default computed for each row"):
        DriverStatement(insert(table), columns=["id"])


async def test_driver_statements_run_in_the_transaction_of_their_session(
    engine: AsyncEngine,
) -> None:
    transaction_id = "SELECT pg_current_xact_id()::text"
    async with async_sessionmaker(engine)() as session:
        driver = await driver_connection(session)
        # Begun before any statement: a write sent now cannot commit on its own.
        assert driver.is_in_transaction()
        first = await driver.fetchval(transaction_id)
        assert await session.scalar(text(transaction_id)) == first
        await session.rollback()
        assert not driver.is_in_transaction()

        # The next transaction of the session gets its connection again, begun again.
        again = await driver_connection(session)
        second = await again.fetchval(transaction_id)
        assert await session.scalar(text(transaction_id)) == second != first
        await session.commit()
        assert not again.is_in_transaction()


async def test_a_driver_statement_binds_through_the_types_of_its_parameters(
    engine: AsyncEngine,
) -> None:
    # JSON is serialized as the engine does (app.core.serialization): an empty list, not the
    # text "[]".
    statement = DriverStatement(
        select(
            cast(func.coalesce(cast(null(), JSON), literal([], JSON)), String),
            cast(bindparam("document", type_=JSON), String),
        )
    )

    async with Reader.on(engine).connection() as connection:
        row = await connection.fetchrow(statement.sql, *statement.arguments(document={"a": [1]}))

    assert row is not None
    assert tuple(row) == ("[]", '{"a":[1]}')


async def test_a_reader_within_a_transaction_reads_in_that_transaction(
    engine: AsyncEngine,
) -> None:
    transaction_id = "SELECT pg_current_xact_id()::text"
    async with engine.connect() as connection:
        await connection.begin()  # SQLAlchemy sends BEGIN with the first statement only
        async with Reader.within(connection).connection() as driver:
            read = await driver.fetchval(transaction_id)
        written = await connection.scalar(text(transaction_id))
        await connection.rollback()

    assert read == written


@pytest.fixture
async def pooled(database_url: str) -> AsyncIterator[tuple[UnitOfWork, AsyncEngine, str]]:
    """A unit of work on a pool of one connection, and a table of the test's own (dropped)."""
    engine = create_engine(
        DatabaseSettings(url=SecretStr(database_url), pool_size=1, max_overflow=0),
        application_name="test",
    )
    table = f"uow_pooled_{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(1)
    sessionmaker = create_sessionmaker(engine)
    outbox = Outbox(sessionmaker, NoQueue(), OutboxSettings())
    unit_of_work = UnitOfWork(Reader.on(engine, gate), sessionmaker, outbox, gate)
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {table} (note text NOT NULL)"))
    try:
        yield unit_of_work, engine, table
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()


class NoQueue:
    """The publisher of an outbox that must publish nothing: these units of work ask for no
    task."""

    queue = "unused"
    is_connected = False

    async def publish(self, message_id: str, body: bytes, headers: Mapping[str, str]) -> None:
        raise AssertionError((message_id, body, headers))


async def test_a_driver_unit_of_work_commits_on_a_pooled_connection_and_gives_it_back(
    pooled: tuple[UnitOfWork, AsyncEngine, str],
) -> None:
    unit_of_work, engine, table = pooled
    async with unit_of_work.begin() as work:
        driver = await work.connection()
        assert driver.is_in_transaction()
        assert unit_of_work.gate.locked(), "it takes its connection through the gate"
        await driver.execute(f"INSERT INTO {table} VALUES ('kept')")  # noqa: S608 - the test's

    async def write_then_fail() -> None:
        async with unit_of_work.begin() as work:
            await (await work.connection()).execute(f"INSERT INTO {table} VALUES ('undone')")  # noqa: S608
            msg = "after writing"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="after writing"):
        await write_then_fail()

    assert not unit_of_work.gate.locked()
    assert "Checked out connections: 0" in engine.pool.status()
    async with Reader.on(engine).connection() as connection:
        assert not connection.is_in_transaction()
        assert await connection.fetchval(f"SELECT array_agg(note) FROM {table}") == ["kept"]  # noqa: S608


async def test_a_unit_of_work_cancelled_mid_transaction_leaves_no_transaction_in_the_pool(
    pooled: tuple[UnitOfWork, AsyncEngine, str], caplog: pytest.LogCaptureFixture
) -> None:
    # An anyio cancel scope cancels every wait in it, the ROLLBACK's too: a connection still in
    # its transaction must not go back to the pool (the pool's reset would not end it), or the
    # next request would run inside it.
    unit_of_work, engine, table = pooled
    with anyio.CancelScope() as scope:
        async with unit_of_work.begin() as work:
            driver = await work.connection()
            await driver.execute(f"INSERT INTO {table} VALUES ('cancelled')")  # noqa: S608
            scope.cancel()
            await anyio.sleep(30)  # cancelled at once
    assert scope.cancelled_caught

    assert "Checked out connections: 0" in engine.pool.status()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    async with asyncio.timeout(5), unit_of_work.begin() as work:
        driver = await work.connection()
        assert await driver.fetchval(f"SELECT count(*) FROM {table}") == 0  # noqa: S608
        await driver.execute(f"INSERT INTO {table} VALUES ('next')")  # noqa: S608
    async with Reader.on(engine).connection() as connection:
        assert await connection.fetchval(f"SELECT array_agg(note) FROM {table}") == ["next"]  # noqa: S608


async def test_a_driver_unit_of_work_has_no_orm_session_and_says_how_to_get_one(
    pooled: tuple[UnitOfWork, AsyncEngine, str],
) -> None:
    unit_of_work, _, _ = pooled
    async with unit_of_work.begin() as work:
        with pytest.raises(TypeError, match=r"begin\(orm=True\)"):
            _ = work.session
    async with unit_of_work.begin(orm=True) as work:
        assert await work.session.scalar(text("SELECT 1")) == 1
        # The driver's connection of an ORM unit of work is its session's, in its transaction.
        transaction_id = "SELECT pg_current_xact_id()::text"
        driver = await work.connection()
        assert await driver.fetchval(transaction_id) == await work.session.scalar(
            text(transaction_id)
        )


def test_a_unit_of_work_runs_on_a_connection_or_a_session() -> None:
    with pytest.raises(TypeError, match="on a driver connection or on a session"):
        Work()
