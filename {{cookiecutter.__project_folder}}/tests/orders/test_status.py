import itertools

import pytest

from app.orders.status import ALLOWED_TRANSITIONS, OrderStatus, can_transition

ALLOWED = {
    (OrderStatus.PENDING, OrderStatus.PROCESSING),
    (OrderStatus.PENDING, OrderStatus.CANCELLED),
    (OrderStatus.PROCESSING, OrderStatus.COMPLETED),
    (OrderStatus.PROCESSING, OrderStatus.FAILED),
    (OrderStatus.PROCESSING, OrderStatus.CANCELLED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(OrderStatus, repeat=2)))
def test_transition_table(current: OrderStatus, target: OrderStatus) -> None:
    assert can_transition(current, target) is ((current, target) in ALLOWED)


def test_every_status_has_a_row() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(OrderStatus)
