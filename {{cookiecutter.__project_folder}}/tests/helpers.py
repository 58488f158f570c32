"""Helpers shared by tests."""

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
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


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
