import uuid

from app.orders.exceptions import InvalidTransition, OrderNotFound
from app.orders.status import OrderStatus


def test_order_not_found_names_the_id() -> None:
    order_id = uuid.UUID("0b6f4c9e-2a55-4d5e-9d1a-3f1f2a7b8c9d")

    error = OrderNotFound(order_id)

    assert error.status_code == 404
    assert error.code == "order_not_found"
    assert error.detail == f"No order with id {order_id}"


def test_invalid_transition_names_both_states() -> None:
    error = InvalidTransition(OrderStatus.COMPLETED, OrderStatus.PENDING)

    assert error.status_code == 409
    assert error.code == "invalid_status_transition"
    assert error.detail == "An order cannot move from completed to pending"
