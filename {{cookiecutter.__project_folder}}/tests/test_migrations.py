"""The migrations build the schema the models describe, and undo it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
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


async def test_the_base_revisions_need_no_example_domain(empty_database: str) -> None:
    # The template deletes the orders revision (0004) when the example is off: 0001-0003 must
    # build every table the service itself uses.
    await asyncio.to_thread(command.upgrade, alembic_config(empty_database), "0003")

    assert await tables(empty_database) == {"alembic_version", "outbox", "idempotency_keys"}


async def test_a_migration_run_limits_its_lock_waits(empty_database: str) -> None:
    config = alembic_config(empty_database)
    engine = create_async_engine(empty_database, poolclass=NullPool)

    def upgrade_and_show(connection: Connection) -> object:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return connection.execute(text("SHOW lock_timeout")).scalar()

    async with engine.connect() as connection:
        # The migration runs inside this transaction, so its settings are still in force after.
        await connection.begin()
        shown = await connection.run_sync(upgrade_and_show)
        await connection.rollback()
    await engine.dispose()

    assert shown == "5s"  # the default of DATABASE_MIGRATION_LOCK_TIMEOUT


async def test_a_migration_blocked_by_a_lock_fails_instead_of_waiting(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "head")
    monkeypatch.setenv("DATABASE_MIGRATION_LOCK_TIMEOUT", "0.2")
    engine = create_async_engine(empty_database, poolclass=NullPool)

    async with engine.connect() as holder:
        # A reader holding a lock on a table that the downgrade drops (one every render has).
        await holder.execute(text("LOCK TABLE outbox IN ACCESS SHARE MODE"))
        downgrade = asyncio.create_task(asyncio.to_thread(command.downgrade, config, "base"))
        try:
            with pytest.raises(DBAPIError) as failure:
                await asyncio.wait_for(asyncio.shield(downgrade), timeout=30)
        finally:
            await holder.rollback()
            await asyncio.wait([downgrade])
    await engine.dispose()

    assert getattr(failure.value.orig, "sqlstate", None) == "55P03"  # lock_not_available
    assert "outbox" in await tables(empty_database)
