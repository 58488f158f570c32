"""Database errors become documented problems, and conflicts between transactions are retried.

The requests here really commit (``committing_client``) on a table of the test's own, dropped
afterwards: commit-time errors, retries and timeouts need real, separate transactions.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from httpx import AsyncClient, Response
from pydantic import BaseModel, SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.database import DriverStatement, Reader
from app.core.unit_of_work import UnitOfWork, Work
from app.main import create_app
from app.settings import DatabaseSettings, OutboxSettings, Settings
from tests.helpers import lifespan_client

STATEMENT_TIMEOUT = 0.5
LOCK_TIMEOUT = 0.1


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short timeouts and retry delays, so that failures come fast."""
    database = settings.database.model_copy(
        update={
            "statement_timeout": STATEMENT_TIMEOUT,
            "lock_timeout": LOCK_TIMEOUT,
            "retry_delay": 0.001,
            "retry_max_delay": 0.01,
        }
    )
    return settings.model_copy(update={"database": database})


# In the test run's own database (see conftest.py), so the name cannot meet another run's.
TABLE = "database_error_probe"


@pytest.fixture(autouse=True)
async def table(engine: AsyncEngine) -> AsyncIterator[None]:
    """A committed table of this test (rows 1 and 2), dropped afterwards."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE database_error_probe ("
                " id int PRIMARY KEY,"
                " n numeric(4, 2) NOT NULL DEFAULT 1 CHECK (n >= 0),"
                " name varchar(3) NOT NULL DEFAULT 'abc',"
                " parent int REFERENCES database_error_probe (id),"
                " code text UNIQUE DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        await connection.execute(text("INSERT INTO database_error_probe (id) VALUES (1), (2)"))
    yield
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE database_error_probe"))


# Statements that break a rule of the table, with the problem each must become.
BROKEN_RULES = {
    "numeric_overflow": (
        "UPDATE database_error_probe SET n = 100 WHERE id = 1",
        {},
        422,
        "value_out_of_range",
    ),
    "too_long": (
        "UPDATE database_error_probe SET name = :v WHERE id = 1",
        {"v": "abcd"},
        422,
        "value_too_long",
    ),
    "nul_character": (
        "UPDATE database_error_probe SET name = :v WHERE id = 1",
        {"v": "a\x00"},
        422,
        "invalid_value",
    ),
    "check": (
        "UPDATE database_error_probe SET n = -1 WHERE id = 1",
        {},
        422,
        "constraint_violation",
    ),
    "not_null": (
        "UPDATE database_error_probe SET name = NULL WHERE id = 1",
        {},
        422,
        "constraint_violation",
    ),
    "unique": ("INSERT INTO database_error_probe (id) VALUES (1)", {}, 409, "duplicate"),
    # Checked at COMMIT, after the handler returned: the unit of work's commit fails.
    "unique_at_commit": ("UPDATE database_error_probe SET code = 'samecode'", {}, 409, "duplicate"),
    "foreign_key": (
        "UPDATE database_error_probe SET parent = 99 WHERE id = 1",
        {},
        409,
        "reference_conflict",
    ),
}


async def execute(work: Work, statement: str, *, orm: bool = False, **parameters: object) -> object:
    """Run SQL in a unit of work on the driver's connection (as routes write), or with ``orm``
    on its session (whose errors SQLAlchemy wraps); the first value it returns, if any."""
    if orm:
        result = await work.session.execute(text(statement), parameters)
        return result.scalar() if statement.startswith("SELECT") else None
    compiled = DriverStatement(text(statement))
    driver = await work.connection()
    return await driver.fetchval(compiled.sql, *compiled.arguments(**parameters))


class Bump(BaseModel):
    conflicts: int
    note: str


@pytest.fixture
def attempts() -> list[int]:
    """The attempts the probe routes saw (a retried request runs its handler again)."""
    return []


@pytest.fixture
def app(app: FastAPI, engine: AsyncEngine, attempts: list[int]) -> FastAPI:
    """The application with routes that meet database errors on purpose."""

    @app.post("/probe/rule/{case}")
    async def break_rule(case: str, request: Request, orm: bool = False) -> dict[str, str]:
        async with UnitOfWork.of(request).begin(orm=orm) as work:
            statement, parameters, _, _ = BROKEN_RULES[case]
            await execute(work, statement, orm=orm, **parameters)
            return {"case": case}

    @app.post("/probe/serialization")
    async def bump(body: Bump, request: Request) -> dict[str, Any]:
        async with UnitOfWork.of(request).begin() as work:
            attempts.append(len(attempts) + 1)
            await execute(work, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await execute(work, "SELECT n FROM database_error_probe WHERE id = 1")  # the snapshot
            if len(attempts) <= body.conflicts:
                # Another transaction changes the row and commits after our snapshot.
                async with engine.begin() as other:
                    await other.execute(
                        text("UPDATE database_error_probe SET n = n + 10 WHERE id = 1")
                    )
            await execute(work, "UPDATE database_error_probe SET n = n + 1 WHERE id = 1")
            return {"note": body.note, "attempts": len(attempts)}

    @app.post("/probe/deadlock")
    async def deadlock(request: Request) -> dict[str, int]:
        async with UnitOfWork.of(request).begin() as work:
            attempts.append(len(attempts) + 1)
            # Longer than PostgreSQL's deadlock_timeout (1 s), so the deadlock is found first.
            await execute(work, "SET LOCAL lock_timeout = '20s'")
            await execute(work, "SET LOCAL statement_timeout = '20s'")
            await execute(work, "UPDATE database_error_probe SET n = n + 1 WHERE id = 1")
            if len(attempts) == 1:
                pid = await execute(work, "SELECT pg_backend_pid()")
                assert isinstance(pid, int)
                locked = asyncio.Event()
                app.state.other = asyncio.create_task(take_in_reverse(engine, pid, locked))
                await locked.wait()
                await execute(work, "UPDATE database_error_probe SET n = n + 1 WHERE id = 2")
            return {"attempts": len(attempts)}

    @app.get("/probe/sleep")
    async def sleep(request: Request) -> None:
        async with UnitOfWork.of(request).begin() as work:
            await execute(work, "SELECT pg_sleep(30)")

    @app.get("/probe/read-sleep")
    async def read_sleep(request: Request) -> None:
        async with Reader.of(request).connection() as connection:
            await connection.execute("SELECT pg_sleep(30)")

    @app.get("/probe/locked")
    async def locked(request: Request) -> None:
        async with UnitOfWork.of(request).begin() as work:
            await execute(work, "UPDATE database_error_probe SET n = 2 WHERE id = 1")

    return app


async def wait_until_waiting_for_a_lock(
    connection: AsyncConnection, pid: int, *, for_at_least: float = 0.0
) -> None:
    """Poll pg_stat_activity until the backend ``pid`` waits for a lock (and has been running
    its statement for ``for_at_least`` seconds)."""
    query = text(
        "SELECT wait_event_type = 'Lock'"
        " AND clock_timestamp() - query_start >= make_interval(secs => :seconds)"
        " FROM pg_stat_activity WHERE pid = :pid"
    )
    async with asyncio.timeout(10):
        while True:
            if await connection.scalar(query, {"pid": pid, "seconds": for_at_least}):
                return
            await asyncio.sleep(0.01)


async def take_in_reverse(engine: AsyncEngine, pid: int, locked: asyncio.Event) -> None:
    """Lock row 2, let the request wait for it, then wait for row 1, which the request holds."""
    async with engine.connect() as other, engine.connect() as observer:
        await other.execute(text("UPDATE database_error_probe SET n = n + 1 WHERE id = 2"))
        locked.set()
        # A head start of half a second on PostgreSQL's deadlock_timeout (1 s): the request's
        # deadlock check runs well before this side's, so the request is the victim, even on a
        # busy machine.
        await wait_until_waiting_for_a_lock(observer, pid, for_at_least=0.5)
        await other.execute(text("UPDATE database_error_probe SET n = n + 1 WHERE id = 1"))
        await other.rollback()


async def row_1(engine: AsyncEngine) -> tuple[object, object]:
    """The number and the code of row 1, as committed."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT n, code FROM database_error_probe WHERE id = 1")
        )
        n, code = result.one()
    return n, code


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("case", sorted(BROKEN_RULES))
@pytest.mark.parametrize("orm", [False, True], ids=["driver", "orm"])
async def test_a_broken_rule_of_the_data_is_a_4xx_problem_without_sql_or_values(
    committing_client: AsyncClient, engine: AsyncEngine, case: str, orm: bool
) -> None:
    _, _, status, code = BROKEN_RULES[case]

    response = await committing_client.post(f"/probe/rule/{case}", params={"orm": orm})

    body = assert_problem(response, status, code)
    assert TABLE not in response.text
    told = f"{body['title']} {body['detail']}"
    for leak in ("UPDATE", "INSERT", "abcd", "samecode", "99", "-1", "numeric", "pkey", "Key ("):
        assert leak not in told
    assert await row_1(engine) == (1, None)  # rolled back


async def test_a_serialization_failure_is_retried_with_the_same_body(
    committing_client: AsyncClient, engine: AsyncEngine, attempts: list[int]
) -> None:
    response = await committing_client.post(
        "/probe/serialization", json={"conflicts": 1, "note": "kept"}
    )

    assert response.status_code == 200
    assert response.json() == {"note": "kept", "attempts": 2}
    assert attempts == [1, 2]
    assert (await row_1(engine))[0] == 12  # the other transaction's 10, then ours


async def test_a_conflict_that_persists_is_a_503_with_retry_after(
    committing_client: AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    response = await committing_client.post(
        "/probe/serialization", json={"conflicts": 99, "note": "lost"}
    )

    body = assert_problem(response, 503, "database_busy")
    assert response.headers["retry-after"] == str(settings.database.retry_after)
    assert "lost" not in body["detail"]
    # Every attempt was disturbed and rolled back: only the other transactions' changes stay.
    assert (await row_1(engine))[0] == 1 + 10 * settings.database.retry_attempts


async def test_a_deadlock_is_retried(
    app: FastAPI, committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    response = await committing_client.post("/probe/deadlock")
    await app.state.other

    assert response.status_code == 200
    assert response.json() == {"attempts": 2}
    assert (await row_1(engine))[0] == 2  # the second attempt's change only


# A unit of work runs its statements through SQLAlchemy, a read through asyncpg's connection.
@pytest.mark.parametrize("probe", ["sleep", "read-sleep"])
async def test_a_statement_timeout_is_a_503_with_retry_after(
    committing_client: AsyncClient, probe: str
) -> None:
    response = await committing_client.get(f"/probe/{probe}")

    assert_problem(response, 503, "database_timeout")
    assert response.headers["retry-after"] == "1"


async def test_a_lock_wait_beyond_the_lock_timeout_is_a_503(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    async with engine.connect() as holder:
        await holder.execute(text("SELECT 1 FROM database_error_probe WHERE id = 1 FOR UPDATE"))

        response = await committing_client.get("/probe/locked")

        await holder.rollback()
    assert_problem(response, 503, "database_busy")
    assert response.headers["retry-after"] == "1"


@pytest.mark.usefixtures("committing_client")
async def test_app_connections_carry_the_timeouts_of_the_settings(app: FastAPI) -> None:
    async with app.state.engine.connect() as connection:
        statement_timeout = await connection.scalar(text("SHOW statement_timeout"))
        lock_timeout = await connection.scalar(text("SHOW lock_timeout"))

    assert statement_timeout == f"{round(STATEMENT_TIMEOUT * 1000)}ms"
    assert lock_timeout == f"{round(LOCK_TIMEOUT * 1000)}ms"


async def test_an_exhausted_pool_is_a_503(settings: Settings) -> None:
    database = settings.database.model_copy(
        update={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.05}
    )
    # No relay: woken when the queue connects, it could take the one connection first.
    no_relay = OutboxSettings(relay_enabled=False)
    app = with_probe(
        create_app(settings.model_copy(update={"database": database, "outbox": no_relay}))
    )
    async with lifespan_client(app) as client, app.state.engine.connect() as held:
        await held.execute(text("SELECT 1"))

        response = await client.get("/probe/one")

    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"


async def test_an_unreachable_database_is_a_503(settings: Settings) -> None:
    nowhere = DatabaseSettings(url=SecretStr("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"))
    app = with_probe(
        create_app(
            settings.model_copy(
                update={"database": nowhere, "outbox": OutboxSettings(relay_enabled=False)}
            )
        )
    )
    async with lifespan_client(app) as client:
        response = await client.get("/probe/one")

    body = assert_problem(response, 503, "database_unavailable")
    assert "127.0.0.1" not in body["detail"]
    assert response.headers["retry-after"] == "1"


async def test_a_read_on_a_connection_the_server_dropped_is_a_503_then_reads_reconnect(
    settings: Settings, engine: AsyncEngine
) -> None:
    one_connection = settings.database.model_copy(update={"pool_size": 1, "max_overflow": 0})
    app = with_probe(
        create_app(
            settings.model_copy(
                update={"database": one_connection, "outbox": OutboxSettings(relay_enabled=False)}
            )
        )
    )
    async with lifespan_client(app) as client:
        pid = (await client.get("/probe/read-pid")).json()
        async with engine.connect() as admin:
            assert await admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        dropped = await client.get("/probe/read-pid")
        again = await client.get("/probe/read-pid")
        written = await client.get("/probe/one")

    body = assert_problem(dropped, 503, "database_unavailable")
    assert "terminat" not in body["detail"]
    assert again.status_code == 200
    assert again.json() != pid, "the pool replaced the dropped connection"
    assert written.status_code == 200, "a unit of work gets a live connection too"


def with_probe(app: FastAPI) -> FastAPI:
    @app.get("/probe/one")
    async def one(request: Request) -> int | None:
        async with UnitOfWork.of(request).begin() as work:
            one = await execute(work, "SELECT 1")
            assert one is None or isinstance(one, int)
            return one

    @app.get("/probe/read-pid")
    async def read_pid(request: Request) -> int:
        async with Reader.of(request).connection() as connection:
            pid: int = await connection.fetchval("SELECT pg_backend_pid()")
        return pid

    return app
