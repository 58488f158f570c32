"""Background work on orders. Tasks take ids, load what they need and are idempotent: running
one twice (a redelivery, a retry, a duplicate) changes nothing that is already done."""

import uuid

from app.core.outbox import enqueue
from app.core.unit_of_work import Work
from app.orders.repository import OrderRepository
from app.orders.service import OrderService, SweepResult
from app.orders.settings import get_orders_settings
from app.worker.broker import broker
from app.worker.dependencies import TaskWork


class QueuedOrderTasks:
    """The service's way to ask for order tasks: written to the outbox with the unit of work,
    published when it commits."""

    def __init__(self, work: Work) -> None:
        self.work = work

    async def process(self, order_id: uuid.UUID, *, again: bool = False) -> None:
        kicker = process_order.kicker().with_labels(order_id=str(order_id))
        if again:
            kicker = kicker.with_task_id(f"again:orders.process:{order_id}")
        await enqueue(self.work, kicker, order_id)

    async def fulfil(self, order_id: uuid.UUID, *, again: bool = False) -> None:
        kicker = fulfil_order.kicker().with_labels(order_id=str(order_id))
        if again:
            kicker = kicker.with_task_id(f"again:orders.fulfil:{order_id}")
        await enqueue(self.work, kicker, order_id)


def order_service(work: Work) -> OrderService:
    """The orders service in a unit of work (a request's or a task's): routes and tasks build
    it from their unit of work rather than taking it as a dependency of its own."""
    return OrderService(OrderRepository(work), QueuedOrderTasks(work))


@broker.task(task_name="orders.process")
async def process_order(order_id: uuid.UUID, work: Work = TaskWork) -> None:
    """Start processing a pending order (and resume one a crash interrupted)."""
    await order_service(work).start_processing(order_id)


@broker.task(task_name="orders.fulfil")
async def fulfil_order(order_id: uuid.UUID, work: Work = TaskWork) -> None:
    """Finish a processing order: completed, or failed with a reason."""
    await order_service(work).fulfil(
        order_id, work_seconds=get_orders_settings().fulfilment_seconds
    )


@broker.task(
    task_name="orders.sweep",
    schedule=[{"interval": get_orders_settings().sweep_interval, "schedule_id": "orders.sweep"}],
)
async def sweep_orders(work: Work = TaskWork) -> SweepResult:
    """Ask again for the tasks of orders that waited too long; fail orders stuck too long."""
    settings = get_orders_settings()
    return await order_service(work).sweep(
        processing_timeout=settings.processing_timeout,
        requeue_pending_after=settings.requeue_pending_after,
    )
