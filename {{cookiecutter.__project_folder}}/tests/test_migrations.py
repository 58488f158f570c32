"""The migrations build the schema the models describe, and undo it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import alembic_config
from tests.helpers import throwaway_database


@pytest.fixture
async def empty_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with throwaway_database(postgres_server_url, prefix="test_migrations") as url:
        yield url


async def tables(database_url: str) -> set[str]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        names = {row[0] for row in rows}
    await engine.dispose()
    return names


async def test_upgrade_check_downgrade_round_trip(empty_database: str) -> None:
    config = alembic_config(empty_database)

    await asyncio.to_thread(command.upgrade, config, "head")
    # No difference between the models and the migrated schema.
    await asyncio.to_thread(command.check, config)
    after_upgrade = await tables(empty_database)
    await asyncio.to_thread(command.downgrade, config, "base")
    after_downgrade = await tables(empty_database)
    await asyncio.to_thread(command.upgrade, config, "head")

    assert "alembic_version" in after_upgrade
    assert after_downgrade == {"alembic_version"}
    assert await tables(empty_database) == after_upgrade
