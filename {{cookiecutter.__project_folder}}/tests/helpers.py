"""Helpers shared by tests."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.settings import Settings
from app.worker.broker import JetStreamBroker


@asynccontextmanager
async def lifespan_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """Run the app's lifespan and yield an in-process HTTP client for it."""
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


@asynccontextmanager
async def throwaway_database(server_url: str, prefix: str = "test") -> AsyncIterator[str]:
    """Create an empty database on the server, yield its URL, and drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def delete_streams(nats_url: str, prefix: str) -> None:
    """Remove the streams (and so the consumers) a test queue created."""
    client = await nats.connect(nats_url)
    try:
        jetstream = client.jetstream()
        for stream in (f"{prefix}_tasks", f"{prefix}_dead_letter"):
            with contextlib.suppress(NotFoundError):
                await jetstream.delete_stream(stream)
    finally:
        await client.close()


async def wait_for_lock_waiters(session: AsyncSession, statement: str, count: int) -> None:
    """Poll pg_stat_activity until ``count`` connections of this database wait for a lock in a
    statement starting with ``statement`` (how a test knows concurrent requests have met)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE :statement"
    )
    async with asyncio.timeout(10):
        # Polls the server's own state (no event to wait on exists), not a guessed delay.
        while True:
            waiting = await session.scalar(query, {"statement": f"{statement}%"})
            # pg_stat_activity is read once per transaction: end it to see the next state.
            await session.rollback()
            if waiting == count:
                return
            await asyncio.sleep(0.01)


@asynccontextmanager
async def worker_broker(settings: Settings) -> AsyncIterator[JetStreamBroker]:
    """A worker's broker of the test's own (it makes the streams and joins the consumer)."""
    worker = JetStreamBroker()
    worker.configure(settings)
    worker.is_worker_process = True
    try:
        async with asyncio.timeout(30):
            await worker.startup()
        yield worker
    finally:
        await worker.shutdown()
