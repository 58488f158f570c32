"""Errors of the orders domain; the error handlers render them as problem+json."""

from uuid import UUID

from app.core.errors import Conflict, NotFound
from app.orders.status import OrderStatus


class OrderNotFound(NotFound):
    code = "order_not_found"
    title = "Order not found"

    def __init__(self, order_id: UUID) -> None:
        super().__init__(f"No order with id {order_id}")


class InvalidTransition(Conflict):
    code = "invalid_status_transition"
    title = "Invalid status transition"

    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"An order cannot move from {current} to {target}")
