"""The session dependency is the unit of work: commit on success, roll back on error."""

import asyncio
import contextlib
import logging

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

from app.core.database import DriverStatement, Reader, create_engine, driver_connection
from app.core.errors import Conflict
from app.core.unit_of_work import UnitOfWork
from app.settings import DatabaseSettings


@pytest.fixture
async def app(app: FastAPI, session: AsyncSession) -> FastAPI:
    """The application with routes that write a row, then succeed or fail."""
    await session.execute(text("CREATE TABLE uow_probe (note text NOT NULL)"))

    @app.post("/probe/{note}")
    async def write(note: str, request: Request) -> dict[str, str]:
        async with UnitOfWork.of(request).begin() as db:
            await db.execute(text("INSERT INTO uow_probe (note) VALUES (:note)"), {"note": note})
            if note == "conflict":
                raise Conflict("refused after writing")
            if note == "crash":
                msg = "crashed after writing"
                raise RuntimeError(msg)
            return {"note": note}

    return app


async def notes(session: AsyncSession) -> list[str]:
    return list((await session.scalars(text("SELECT note FROM uow_probe ORDER BY note"))).all())


async def test_successful_request_commits(client: AsyncClient, session: AsyncSession) -> None:
    response = await client.post("/probe/kept")

    assert response.status_code == 200
    assert await notes(session) == ["kept"]


async def test_domain_error_rolls_back_what_the_handler_wrote(
    client: AsyncClient, session: AsyncSession
) -> None:
    response = await client.post("/probe/conflict")

    assert response.status_code == 409
    assert await notes(session) == []


async def test_crash_rolls_back_what_the_handler_wrote(
    client: AsyncClient, session: AsyncSession
) -> None:
    response = await client.post("/probe/crash")

    assert response.status_code == 500
    assert await notes(session) == []


async def test_failed_request_does_not_undo_an_earlier_one(
    client: AsyncClient, session: AsyncSession
) -> None:
    await client.post("/probe/first")
    await client.post("/probe/conflict")

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
