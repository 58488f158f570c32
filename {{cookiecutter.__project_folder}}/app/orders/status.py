"""The life cycle of an order and the moves it allows."""

from app.models.order import OrderStatus

__all__ = ["ALLOWED_TRANSITIONS", "OrderStatus", "can_transition"]


ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PROCESSING, OrderStatus.CANCELLED}),
    OrderStatus.PROCESSING: frozenset(
        {OrderStatus.COMPLETED, OrderStatus.FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.FAILED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether an order in ``current`` may move to ``target``."""
    return target in ALLOWED_TRANSITIONS[current]
