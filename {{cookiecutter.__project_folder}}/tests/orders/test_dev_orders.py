"""An order created on the ``just dev`` stack is processed, and is still there next time.

This test also covers what ``tests/test_dev.py`` checks in a project without the example (the
stack gets ready with nothing else running, and Ctrl-C stops it cleanly), so that file is not
rendered with the example: each start of the stack costs seconds of CPU.
"""

import asyncio
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import nats
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.models import Order
from devtools import dev
from devtools.embedded import free_port
from tests.processes import POLL_EVERY, dev_stack, ready, scratch_folder, wait_for

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py

NEW_ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": "3.00"}],
}


async def status_of(client: httpx.AsyncClient, url: str) -> str:
    return str((await client.get(url, timeout=5)).json()["status"])


async def _stored(database_url: str, nats_url: str, order_id: uuid.UUID) -> tuple[str, list[str]]:
    """The order's status in the database, and the names of the streams NATS kept."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            status = await connection.scalar(select(Order.status).where(Order.id == order_id))
    finally:
        await engine.dispose()
    client = await nats.connect(nats_url)
    try:
        streams = [info.config.name or "" for info in await client.jetstream().streams_info()]
    finally:
        await client.close()
    return str(status), streams


def _restart(data: Path, order_id: uuid.UUID) -> tuple[str, list[str]]:
    """Start the stack's servers again on its data folder, as the next ``just dev`` does (the
    same functions of ``devtools.dev``: the existing database is kept, the migrations find
    nothing to do), and read back what the first run left."""
    with ExitStack() as stack:
        database_url = stack.enter_context(dev.database(stack, data, embedded=True))
        dev.migrate(database_url)
        nats_url = dev.nats_server(stack, data, free_port(), embedded=True)
        return asyncio.run(_stored(database_url, nats_url, order_id))


@pytest.mark.slow(seconds=10)
async def test_dev_stack_completes_an_order_and_keeps_it_across_restarts() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        with scratch_folder() as data:
            with dev_stack(port, data) as stack:
                await wait_for(
                    lambda: ready(client, f"{base}/health/ready"),
                    within=90,
                    what="the API",
                    every=POLL_EVERY,
                )
                created = await client.post(f"{base}/api/v1/orders", json=NEW_ORDER)
                assert created.status_code == 201
                order_url = f"{base}{created.headers['location']}"

                async def completed() -> bool:
                    return await status_of(client, order_url) == "completed"

                await wait_for(completed, within=60, what="the order to complete", every=POLL_EVERY)
            assert stack.returncode == 0  # Ctrl-C stopped every process cleanly

            # The second start of the whole stack is not repeated here (its processes are the
            # ones above): its servers come back on the same data, with the order and the queue.
            order_id = uuid.UUID(created.json()["id"])
            status, streams = await asyncio.to_thread(_restart, data, order_id)

    assert status == "completed"
    assert any(name.endswith("_tasks") for name in streams), streams
