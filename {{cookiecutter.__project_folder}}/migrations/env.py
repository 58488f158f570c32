"""Alembic environment: async engine from the settings, every model from ``app.models``.

Tests and tools may pass an open connection in ``config.attributes["connection"]`` (then it is
used as is) or a URL in ``config.attributes["database_url"]`` (instead of ``DATABASE_URL``).

Every run sets ``lock_timeout`` (``DATABASE_MIGRATION_LOCK_TIMEOUT``) for its transaction: a
migration that waits for a lock behind a long transaction would hold up every query queued
behind it, so it fails instead, and is run again later. No statement timeout applies (a data
migration may run long), unless the server or the role sets one.
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.database import milliseconds
from app.models import Base
from app.settings import DatabaseSettings, get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("database_url")
    return url if isinstance(url, str) else get_settings().database.url.get_secret_value()


def set_lock_timeout() -> None:
    """Limit lock waits for the rest of the migration's transaction (and in ``--sql`` output)."""
    timeout = milliseconds(DatabaseSettings().migration_lock_timeout)
    context.execute(f"SET LOCAL lock_timeout = {timeout}")


def run_migrations_offline() -> None:
    """Write the SQL to standard output instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
    )
    with context.begin_transaction():
        set_lock_timeout()
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        set_lock_timeout()
        context.run_migrations()


async def run_migrations_async() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        run_migrations(connection)
    else:
        asyncio.run(run_migrations_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
