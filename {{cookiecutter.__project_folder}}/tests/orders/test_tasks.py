"""The processing rules the tasks run, on the test's transaction."""

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.unit_of_work import Work
from app.models import Order
from app.orders.repository import OrderRepository
from app.orders.service import OrderService
from app.orders.status import OrderStatus
from tests.orders.factories import make_order


class RecordedTasks:
    """Stands in for the queue: records which tasks the service asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, uuid.UUID]] = []

    async def process(self, order_id: uuid.UUID, *, again: bool = False) -> None:
        self.asked.append(("process again" if again else "process", order_id))

    async def fulfil(self, order_id: uuid.UUID, *, again: bool = False) -> None:
        self.asked.append(("fulfil again" if again else "fulfil", order_id))


@pytest.fixture
def tasks() -> RecordedTasks:
    return RecordedTasks()


@pytest.fixture
def service(session: AsyncSession, tasks: RecordedTasks) -> OrderService:
    return OrderService(OrderRepository(Work(session=session)), tasks)


async def status_of(session: AsyncSession, order: Order) -> OrderStatus:
    await session.refresh(order, attribute_names=["status"])
    return order.status


async def test_start_processing_moves_a_pending_order_and_asks_for_fulfilment(
    service: OrderService, tasks: RecordedTasks, session: AsyncSession
) -> None:
    order = await make_order(session)

    await service.start_processing(order.id)

    assert await status_of(session, order) is OrderStatus.PROCESSING
    assert tasks.asked == [("fulfil", order.id)]


async def test_start_processing_resumes_an_order_already_processing(
    service: OrderService, tasks: RecordedTasks, session: AsyncSession
) -> None:
    order = await make_order(session, status=OrderStatus.PROCESSING)

    await service.start_processing(order.id)

    assert await status_of(session, order) is OrderStatus.PROCESSING
    assert tasks.asked == [("fulfil", order.id)]


@pytest.mark.parametrize(
    "status", [OrderStatus.COMPLETED, OrderStatus.FAILED, OrderStatus.CANCELLED]
)
async def test_start_processing_leaves_finished_and_cancelled_orders_alone(
    service: OrderService, tasks: RecordedTasks, session: AsyncSession, status: OrderStatus
) -> None:
    order = await make_order(session, status=status)

    await service.start_processing(order.id)

    assert await status_of(session, order) is status
    assert tasks.asked == []


async def test_start_processing_of_an_unknown_order_does_nothing(
    service: OrderService, tasks: RecordedTasks
) -> None:
    await service.start_processing(uuid.uuid4())

    assert tasks.asked == []


async def test_fulfil_completes_a_processing_order(
    service: OrderService, session: AsyncSession
) -> None:
    order = await make_order(session, status=OrderStatus.PROCESSING)

    await service.fulfil(order.id)
    await service.fulfil(order.id)  # a duplicate delivery changes nothing

    assert await status_of(session, order) is OrderStatus.COMPLETED
    assert order.failure_reason is None


async def test_fulfil_fails_an_order_with_an_unavailable_item(
    service: OrderService, session: AsyncSession
) -> None:
    order = await make_order(session, status=OrderStatus.PROCESSING, sku="UNAVAILABLE-9")

    await service.fulfil(order.id)

    assert await status_of(session, order) is OrderStatus.FAILED
    await session.refresh(order, attribute_names=["failure_reason"])
    assert order.failure_reason == "Not available: UNAVAILABLE-9"


async def test_fulfil_skips_an_order_that_is_not_processing(
    service: OrderService, session: AsyncSession
) -> None:
    order = await make_order(session, status=OrderStatus.CANCELLED)

    await service.fulfil(order.id)

    assert await status_of(session, order) is OrderStatus.CANCELLED


async def test_sweep_asks_again_for_late_tasks_and_fails_orders_stuck_too_long(
    service: OrderService, tasks: RecordedTasks, session: AsyncSession
) -> None:
    stuck = await make_order(session, status=OrderStatus.PROCESSING)
    slow = await make_order(session, status=OrderStatus.PROCESSING)
    waiting = await make_order(session, status=OrderStatus.PENDING)
    fresh = await make_order(session, status=OrderStatus.PROCESSING)
    await session.execute(
        text("UPDATE orders SET updated_at = now() - interval '2 hours' WHERE id = :id"),
        {"id": stuck.id},
    )
    await session.execute(
        text("UPDATE orders SET updated_at = now() - interval '10 minutes' WHERE id IN (:a, :b)"),
        {"a": slow.id, "b": waiting.id},
    )

    result = await service.sweep(processing_timeout=3600, requeue_pending_after=300)

    assert (result.failed, result.refulfilled, result.requeued) == (1, 1, 1)
    assert await status_of(session, stuck) is OrderStatus.FAILED
    # A healthy order whose fulfilment may be lost is fulfilled again, not failed.
    assert await status_of(session, slow) is OrderStatus.PROCESSING
    assert await status_of(session, fresh) is OrderStatus.PROCESSING
    assert tasks.asked == [("fulfil again", slow.id), ("process again", waiting.id)]
