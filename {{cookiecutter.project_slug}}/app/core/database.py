"""The SQLAlchemy async engine on asyncpg, owned by the application's lifespan."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.settings import DatabaseSettings


def create_engine(settings: DatabaseSettings, *, application_name: str) -> AsyncEngine:
    """Build the engine; it connects lazily, so building it needs no running database."""
    return create_async_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_pre_ping=True,
        echo=settings.echo,
        # Shows up in pg_stat_activity, so a DBA can tell the API from the worker.
        connect_args={"server_settings": {"application_name": application_name}},
    )


async def ping(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
