"""Shared fixtures: real PostgreSQL and NATS, from the environment or embedded.

``TEST_DATABASE_URL`` (a server to create a throwaway database on) and ``NATS_URL`` point the
tests at running servers, as in CI or a compose stack. Unset, the fixtures start embedded
servers in a temporary folder and stop them at the end of the run.

Each test runs inside a transaction on one connection, rolled back at the end: the request's
unit of work commits and rolls back savepoints inside it, so tests see real commit and rollback
behaviour and leave nothing behind.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.main import create_app
from app.settings import DatabaseSettings, Environment, NatsSettings, Settings
from devtools.embedded import embedded_nats, embedded_postgresql, env_or_none
from tests.helpers import lifespan_client, throwaway_database

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server with JetStream."""
    if url := env_or_none("NATS_URL"):
        yield url
        return
    with embedded_nats(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server, as a URL to a database that already exists on it."""
    if url := env_or_none("TEST_DATABASE_URL"):
        yield url
        return
    with embedded_postgresql() as url:
        yield url


def alembic_config(database_url: str) -> Config:
    """The project's Alembic configuration, pointed at ``database_url``."""
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh database for this test run, migrated to the latest revision, dropped at the end."""
    async with throwaway_database(postgres_server_url) as url:
        # Alembic's env.py runs its own event loop; give it a thread of its own.
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database, for the fixtures' own connections."""
    test_engine = create_async_engine(database_url, pool_size=5)
    yield test_engine
    await test_engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's transaction: their commits and rollbacks become savepoints."""
    return async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for arranging and checking data in a test."""
    async with sessionmaker() as test_session:
        yield test_session


@pytest.fixture
def settings(database_url: str, nats_url: str) -> Settings:
    """Settings for a test: the test servers, test environment."""
    return Settings(
        environment=Environment.TEST,
        database=DatabaseSettings(url=SecretStr(database_url), pool_size=2),
        nats=NatsSettings(url=nats_url),
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The application under test (tests may add routes before the client starts it)."""
    return create_app(settings)


@pytest.fixture
async def client(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncClient]:
    """An in-process HTTP client; requests run their unit of work in the test's transaction."""
    async with lifespan_client(app) as http:
        app.state.sessionmaker = sessionmaker
        yield http


@pytest.fixture
async def committing_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """A client whose requests really commit (clean up what such a test creates)."""
    async with lifespan_client(app) as http:
        yield http
