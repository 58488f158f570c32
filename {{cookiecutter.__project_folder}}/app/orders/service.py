"""The business rules of orders. Raises domain errors; never commits (the request does)."""

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from app.core.conditional import IfMatch, check_if_match, strong_etag
from app.orders.exceptions import InvalidTransition, OrderNotFound
from app.orders.repository import OrderRepository
from app.orders.schemas import OrderCreate, OrderItemRead, OrderRead, OrderView
from app.orders.status import OrderStatus, can_transition

log = structlog.get_logger(__name__)


# Items whose SKU starts with this cannot be supplied: fulfilment fails (shows the failed path).
UNAVAILABLE_SKU_PREFIX = "UNAVAILABLE"


class OrderTasks(Protocol):
    """The background work the service asks for: saved with the unit of work, published after
    it commits. ``again=True`` asks again for a task that may be lost: such requests carry a
    fixed id, so repeating them never queues more than one copy."""

    async def process(self, order_id: uuid.UUID, *, again: bool = False) -> None: ...

    async def fulfil(self, order_id: uuid.UUID, *, again: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class SweepResult:
    failed: int
    requeued: int
    refulfilled: int


class OrderService:
    def __init__(self, repository: OrderRepository, tasks: OrderTasks) -> None:
        self.repository = repository
        self.tasks = tasks

    async def create(self, data: OrderCreate) -> OrderView:
        """Record a new pending order and ask for its processing."""
        order_id = uuid.uuid4()
        total = data.total
        stored = await self.repository.insert(
            order_id,
            customer_email=data.customer_email,
            total=total,
            items=[(item.sku, item.quantity, item.unit_price) for item in data.items],
        )
        await self.tasks.process(order_id)
        log.info("order.created", order_id=str(order_id), total=str(total))
        order = OrderRead(
            id=order_id,
            customer_email=data.customer_email,
            status=OrderStatus.PENDING,
            items=[OrderItemRead.model_validate(item, from_attributes=True) for item in data.items],
            total=total,
            failure_reason=None,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
        )
        return OrderView(order, strong_etag(str(stored.version)))

    async def cancel(self, order_id: uuid.UUID, *, if_match: IfMatch | None = None) -> OrderView:
        """Cancel an order if its life cycle allows it (the one change clients may make); with
        ``if_match``, only if the order is still the one the client saw.

        The row stays locked until the unit of work ends, so a concurrent change (another
        cancel, the worker's fulfilment) is applied before or after this one, never in between,
        and the entity tag and the status are judged after any change committed before.
        """
        locked = await self.repository.lock_status(order_id)
        if locked is None:
            raise OrderNotFound(order_id)
        previous, version = locked
        check_if_match(if_match, strong_etag(str(version)))
        if not can_transition(previous, OrderStatus.CANCELLED):
            raise InvalidTransition(previous, OrderStatus.CANCELLED)
        view = await self.repository.set_status(order_id, OrderStatus.CANCELLED)
        if view is None:  # pragma: no cover - the row is locked by this transaction
            raise OrderNotFound(order_id)
        log.info("order.status_changed", order_id=str(order_id), old=previous, new="cancelled")
        return view

    async def start_processing(self, order_id: uuid.UUID) -> None:
        """Move a pending order to processing and ask for its fulfilment; idempotent."""
        order = await self.repository.get_with_items(order_id, for_update=True)
        if order is None:
            log.warning("order.process_skipped", order_id=str(order_id), reason="not found")
            return
        if order.status is OrderStatus.PENDING:
            order.status = OrderStatus.PROCESSING
            await self.repository.session.flush()
        elif order.status is not OrderStatus.PROCESSING:
            log.info("order.process_skipped", order_id=str(order_id), status=order.status)
            return
        # Also for an order already processing: this is a redelivery after a crash that may
        # have come before the fulfilment task was saved; fulfilling twice is harmless.
        await self.tasks.fulfil(order_id)
        log.info("order.processing", order_id=str(order_id))

    async def fulfil(self, order_id: uuid.UUID, *, work_seconds: float = 0.0) -> None:
        """Complete a processing order, or fail it with a reason; idempotent."""
        order = await self.repository.get_with_items(order_id, for_update=True)
        if order is None or order.status is not OrderStatus.PROCESSING:
            log.info("order.fulfil_skipped", order_id=str(order_id))
            return
        if work_seconds:
            await asyncio.sleep(work_seconds)  # stands in for the real work
        unavailable = [i.sku for i in order.items if i.sku.startswith(UNAVAILABLE_SKU_PREFIX)]
        if unavailable:
            order.status = OrderStatus.FAILED
            order.failure_reason = f"Not available: {', '.join(unavailable)}"
        else:
            order.status = OrderStatus.COMPLETED
        await self.repository.session.flush()
        log.info("order.fulfilled", order_id=str(order_id), status=order.status)

    async def sweep(
        self, *, processing_timeout: float, requeue_pending_after: float
    ) -> SweepResult:
        """Ask again for the tasks of orders that waited too long; fail orders stuck in
        processing past ``processing_timeout``.

        Tasks go through the outbox, so they are lost only if something outside the service
        removed them (a purged stream, the stream's ``max_age``). Asking again uses fixed ids:
        JetStream keeps one copy per duplicate window however often the sweep runs.
        """
        now = datetime.now(UTC)
        waited = now - timedelta(seconds=requeue_pending_after)
        stuck = await self.repository.stale(
            OrderStatus.PROCESSING, before=now - timedelta(seconds=processing_timeout)
        )
        for order in stuck:
            order.status = OrderStatus.FAILED
            order.failure_reason = "Processing timed out"
        stuck_ids = {order.id for order in stuck}
        slow = [
            order
            for order in await self.repository.stale(OrderStatus.PROCESSING, before=waited)
            if order.id not in stuck_ids
        ]
        for order in slow:
            await self.tasks.fulfil(order.id, again=True)
        waiting = await self.repository.stale(OrderStatus.PENDING, before=waited)
        for order in waiting:
            await self.tasks.process(order.id, again=True)
        await self.repository.session.flush()
        result = SweepResult(failed=len(stuck), requeued=len(waiting), refulfilled=len(slow))
        if stuck or slow or waiting:
            log.info(
                "order.swept",
                failed=result.failed,
                requeued=result.requeued,
                refulfilled=result.refulfilled,
            )
        return result
