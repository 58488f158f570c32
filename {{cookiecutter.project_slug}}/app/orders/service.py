"""The business rules of orders. Raises domain errors; never commits (the request does)."""

import uuid

import structlog

from app.models import Order, OrderItem
from app.orders.exceptions import InvalidTransition, OrderNotFound
from app.orders.repository import OrderRepository
from app.orders.schemas import OrderCreate, OrderFilters
from app.orders.status import OrderStatus, can_transition

log = structlog.get_logger(__name__)


class OrderService:
    def __init__(self, repository: OrderRepository) -> None:
        self.repository = repository

    async def create(self, data: OrderCreate) -> Order:
        """Record a new pending order."""
        order = Order(
            customer_email=data.customer_email,
            status=OrderStatus.PENDING,
            total=data.total,
            items=[
                OrderItem(
                    position=position,
                    sku=item.sku,
                    quantity=item.quantity,
                    unit_price=item.unit_price,
                )
                for position, item in enumerate(data.items)
            ],
        )
        await self.repository.add(order)
        log.info("order.created", order_id=str(order.id), total=str(order.total))
        return order

    async def get(self, order_id: uuid.UUID) -> Order:
        """The order with its items; ``OrderNotFound`` when there is none."""
        order = await self.repository.get_with_items(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    async def list_orders(self, filters: OrderFilters) -> tuple[list[Order], str | None]:
        """A page of orders and the cursor of the next one."""
        return await self.repository.list_page(filters)

    async def change_status(self, order_id: uuid.UUID, target: OrderStatus) -> Order:
        """Move an order to ``target`` if its life cycle allows it.

        The row stays locked until the unit of work ends, so two concurrent changes are applied
        one after the other and the second is judged against the first one's result.
        """
        order = await self.repository.get_with_items(order_id, for_update=True)
        if order is None:
            raise OrderNotFound(order_id)
        if not can_transition(order.status, target):
            raise InvalidTransition(order.status, target)
        previous = order.status
        order.status = target
        await self.repository.session.flush()
        log.info("order.status_changed", order_id=str(order_id), old=previous, new=target)
        return order
