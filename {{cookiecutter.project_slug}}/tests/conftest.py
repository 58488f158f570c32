"""Shared fixtures: real PostgreSQL and NATS, from the environment or embedded.

``TEST_DATABASE_URL`` (a server to create a throwaway database on) and ``NATS_URL`` point the
tests at running servers, as in CI or a compose stack. Unset, the fixtures start embedded
servers in a temporary folder and stop them at the end of the run.
"""

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.main import create_app
from app.settings import DatabaseSettings, Environment, NatsSettings, Settings
from devtools.embedded import embedded_nats, embedded_postgresql, env_or_none
from tests.helpers import lifespan_client


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


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh database for this test run, dropped at the end."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(
        postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


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
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """An in-process HTTP client, with the application's lifespan running."""
    async with lifespan_client(app) as http:
        yield http
