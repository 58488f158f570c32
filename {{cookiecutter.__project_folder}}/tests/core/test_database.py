"""The session dependency is the unit of work: commit on success, roll back on error."""

import asyncio

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.database import Reader, create_engine
from app.core.errors import Conflict
from app.core.unit_of_work import SessionDep
from app.settings import DatabaseSettings


@pytest.fixture
async def app(app: FastAPI, session: AsyncSession) -> FastAPI:
    """The application with routes that write a row, then succeed or fail."""
    await session.execute(text("CREATE TABLE uow_probe (note text NOT NULL)"))

    @app.post("/probe/{note}")
    async def write(note: str, db: SessionDep) -> dict[str, str]:
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
    transaction_id = text("SELECT pg_current_xact_id()::text")
    async with Reader.on(engine).connection() as connection:
        autocommit = {await connection.scalar(transaction_id) for _ in range(2)}
    async with engine.connect() as connection:
        transactional = {await connection.scalar(transaction_id) for _ in range(2)}
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
        assert await connection.scalar(text("SELECT 1")) == 1

    assert not gate.locked()
    assert "Checked out connections: 0" in engine.pool.status(), "back in the pool"
