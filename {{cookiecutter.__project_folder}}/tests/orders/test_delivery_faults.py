"""No order loses its tasks: NATS down, the API killed between commit and publish, a lost
fulfilment, a sweep that runs while no worker does. Real PostgreSQL, NATS and worker processes."""

import signal
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.outbox import Outbox, OutboxMessage
from app.core.unit_of_work import Work
from app.main import create_app
from app.models import Order
from app.orders.status import OrderStatus
from app.orders.tasks import order_service
from app.settings import OutboxSettings, Settings
from app.worker.broker import JetStreamBroker
from app.worker.queue import QueueConfig
from devtools.embedded import embedded_nats, free_port, free_ports
from tests.helpers import lifespan_client
from tests.orders.factories import make_order
from tests.processes import (
    process_env,
    running,
    start_api,
    start_scheduler,
    start_worker,
    stop,
    task_runs,
    wait_for,
)

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py

ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "B-1", "quantity": 1, "unit_price": "5.00"}],
}


async def statuses(
    factory: async_sessionmaker[AsyncSession], ids: list[uuid.UUID]
) -> dict[OrderStatus, int]:
    async with factory() as session:
        rows = await session.execute(
            select(Order.status, func.count()).where(Order.id.in_(ids)).group_by(Order.status)
        )
        return {status: number for status, number in rows}  # noqa: C416 - rows, not pairs


async def outbox_size(factory: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Tasks waiting in the outbox for the queue of ``settings``."""
    queue = QueueConfig.from_settings(settings).subject
    async with factory() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.queue == queue)
            )
            or 0
        )


def each_ran_once(output: str, ids: list[uuid.UUID]) -> None:
    runs = task_runs(output)
    for order_id in ids:
        assert runs[("orders.process", str(order_id))] == 1, order_id
        assert runs[("orders.fulfil", str(order_id))] == 1, order_id


def with_nats(settings: Settings, url: str, outbox: OutboxSettings) -> Settings:
    return settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"url": url}), "outbox": outbox}
    )


@pytest.mark.slow(seconds=8)
async def test_orders_created_while_nats_is_down_complete_once_it_is_back(
    fresh_queue: Settings, committed: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    port = free_port()
    store = tmp_path / "nats"
    quick = OutboxSettings(relay_min_age=0.5, relay_interval=0.5)
    own = with_nats(fresh_queue, f"nats://127.0.0.1:{port}", quick)
    async with AsyncExitStack() as stack:
        with embedded_nats(store, port=port):
            worker = stack.enter_context(running(start_worker(process_env(own))))
            api = await stack.enter_async_context(lifespan_client(create_app(own)))
            await wait_for(lambda: _ready(api, "ok"), what="the API to reach NATS")
        # NATS is down: the API still takes orders; their tasks wait in the outbox.
        await wait_for(lambda: _ready(api, "degraded"), what="the API to notice")
        responses = [await api.post("/api/v1/orders", json=ORDER) for _ in range(100)]
        assert [r.status_code for r in responses] == [201] * 100
        ids = [uuid.UUID(r.json()["id"]) for r in responses]
        assert await outbox_size(committed, own) == 100

        with embedded_nats(store, port=port):
            await wait_for(
                lambda: _all(committed, ids, OrderStatus.COMPLETED),
                within=90,
                what="every order to complete",
            )
            output = stop(worker)

    each_ran_once(output, ids)
    assert await outbox_size(committed, own) == 0


async def _ready(api: AsyncClient, status: str) -> bool:
    body: dict[str, object] = (await api.get("/health/ready")).json()
    return body.get("status") == status


async def _all(
    factory: async_sessionmaker[AsyncSession], ids: list[uuid.UUID], wanted: OrderStatus
) -> bool:
    return await statuses(factory, ids) == {wanted: len(ids)}


@pytest.mark.slow(seconds=5)
async def test_order_of_an_api_killed_before_publishing_is_relayed_and_processed_once(
    fresh_queue: Settings, committed: async_sessionmaker[AsyncSession]
) -> None:
    # The API cannot reach NATS, so it is killed with the task committed but not published.
    port, nowhere = free_ports(2)
    # The API waits a connect timeout (plus a second) for NATS before it serves: the shortest.
    env = process_env(fresh_queue, NATS_URL=f"nats://127.0.0.1:{nowhere}", NATS_CONNECT_TIMEOUT="1")
    api = start_api(env, port)
    with running(api):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_for(lambda: _answers(http), within=60, what="the API to start")
            response = await http.post("/api/v1/orders", json=ORDER)
        stop(api, signal.SIGKILL)
    assert response.status_code == 201
    order_id = uuid.UUID(response.json()["id"])
    assert await outbox_size(committed, fresh_queue) == 1

    # A worker's relay publishes what the dead API could not.
    with running(start_worker(process_env(fresh_queue, OUTBOX_RELAY_MIN_AGE="0"))) as worker:
        await wait_for(lambda: _all(committed, [order_id], OrderStatus.COMPLETED), what="the order")
        output = stop(worker)

    each_ran_once(output, [order_id])
    assert await outbox_size(committed, fresh_queue) == 0


async def _answers(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/health/live")).status_code == 200
    except httpx.TransportError:
        return False


async def test_sweeps_while_no_worker_runs_queue_one_copy_per_order(
    publisher: JetStreamBroker, committed: async_sessionmaker[AsyncSession]
) -> None:
    outbox = Outbox(committed, publisher, OutboxSettings())
    async with committed.begin() as session:
        orders = [await make_order(session) for _ in range(3)]
    requeued = []
    for _ in range(3):  # three sweeps, one a minute in production, while no worker runs
        async with committed() as session:
            work = Work(session=session, outbox=outbox)
            result = await order_service(work).sweep(
                processing_timeout=3600, requeue_pending_after=0
            )
            await session.commit()
        await work.published()
        requeued.append(result.requeued)

    assert requeued[0] >= len(orders)
    assert requeued == [requeued[0]] * 3
    info = await publisher.jetstream.stream_info(publisher.config.stream)
    assert info.state.messages == requeued[0], "JetStream dropped the repeated requests"


@pytest.mark.slow(seconds=3)
async def test_sweep_fulfils_a_processing_order_whose_fulfilment_was_lost(
    fresh_queue: Settings, committed: async_sessionmaker[AsyncSession]
) -> None:
    async with committed.begin() as session:
        lost = await make_order(session, status=OrderStatus.PROCESSING)
    env = process_env(
        fresh_queue,
        ORDERS_SWEEP_INTERVAL="1",
        ORDERS_REQUEUE_PENDING_AFTER="0.2",
        ORDERS_PROCESSING_TIMEOUT="600",
    )

    with running(start_worker(env)), running(start_scheduler(env)):
        await wait_for(lambda: _all(committed, [lost.id], OrderStatus.COMPLETED), what="it")
