"""Orders processed by a real worker (and swept by a real scheduler) on real JetStream."""

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.main import create_app
from app.models import Order
from app.orders.status import OrderStatus
from app.settings import Settings
from tests.helpers import lifespan_client
from tests.orders.factories import make_order
from tests.processes import lines, process_env, running, start_scheduler, start_worker, wait_for

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py


@pytest.fixture
async def api(shared_queue: Settings) -> AsyncIterator[AsyncClient]:
    """The API on the shared worker's queue, committing for real."""
    async with lifespan_client(create_app(shared_queue)) as client:
        yield client


async def status(
    factory: async_sessionmaker[AsyncSession], order_id: uuid.UUID
) -> OrderStatus | None:
    async with factory() as session:
        return await session.scalar(select(Order.status).where(Order.id == order_id))


def order_body(*skus: str) -> dict[str, object]:
    items = [{"sku": sku, "quantity": 1, "unit_price": "5.00"} for sku in skus]
    return {"customer_email": "ada@example.com", "items": items}


@pytest.mark.usefixtures("shared_worker")
async def test_created_order_is_completed_by_the_worker_with_the_request_id_in_its_logs(
    api: AsyncClient, committed: async_sessionmaker[AsyncSession], shared_worker_log: Path
) -> None:
    response = await api.post(
        "/api/v1/orders", json=order_body("BOOK-1"), headers={"X-Request-ID": "req-e2e"}
    )
    order_id = uuid.UUID(response.json()["id"])

    await wait_for(
        lambda: _is(committed, order_id, OrderStatus.COMPLETED), what="the order to complete"
    )
    # The worker logs a task's end after its commit: wait for both lines of this order's tasks.
    await wait_for(
        lambda: (
            {e["task_name"] for e in finished(shared_worker_log, order_id)}
            >= {"orders.process", "orders.fulfil"}
        ),
        what="the worker to log both tasks",
    )

    for event in finished(shared_worker_log, order_id):
        assert event["request_id"] == "req-e2e"
        assert event["order_id"] == str(order_id)


def finished(log: Path, order_id: uuid.UUID) -> list[dict[str, str]]:
    """The worker's ``task.finished`` log lines of the order's tasks (the worker's log holds the
    tasks of other tests too)."""
    events = [json.loads(line) for line in lines(log) if line.startswith("{")]
    return [
        event
        for event in events
        if event.get("event") == "task.finished" and event.get("order_id") == str(order_id)
    ]


async def _is(
    factory: async_sessionmaker[AsyncSession], order_id: uuid.UUID, wanted: OrderStatus
) -> bool:
    return await status(factory, order_id) is wanted


@pytest.mark.usefixtures("shared_worker")
async def test_order_with_an_unavailable_item_ends_failed_with_a_reason(
    api: AsyncClient, committed: async_sessionmaker[AsyncSession]
) -> None:
    response = await api.post("/api/v1/orders", json=order_body("BOOK-1", "UNAVAILABLE-2"))
    order_id = uuid.UUID(response.json()["id"])

    await wait_for(lambda: _is(committed, order_id, OrderStatus.FAILED), what="the failure")

    body = (await api.get(f"/api/v1/orders/{order_id}")).json()
    assert body["failure_reason"] == "Not available: UNAVAILABLE-2"


@pytest.mark.slow(seconds=3)
async def test_scheduler_sweep_fails_an_order_stuck_in_processing(
    fresh_queue: Settings, committed: async_sessionmaker[AsyncSession]
) -> None:
    async with committed.begin() as session:
        stuck = await make_order(session, status=OrderStatus.PROCESSING)
    env = process_env(fresh_queue, ORDERS_SWEEP_INTERVAL="1", ORDERS_PROCESSING_TIMEOUT="0.2")

    with running(start_worker(env)), running(start_scheduler(env)):
        await wait_for(lambda: _is(committed, stuck.id, OrderStatus.FAILED), what="the sweep")
