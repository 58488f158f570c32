from decimal import Decimal

import pytest
from pydantic import ValidationError

from app.orders.schemas import OrderCreate


def _order(**item: object) -> dict[str, object]:
    line = {"sku": "BOOK-1", "quantity": 2, "unit_price": "9.50"} | item
    return {"customer_email": "ada@example.com", "items": [line]}


def test_total_sums_quantity_times_price() -> None:
    order = OrderCreate.model_validate(
        {
            "customer_email": "ada@example.com",
            "items": [
                {"sku": "BOOK-1", "quantity": 2, "unit_price": "9.50"},
                {"sku": "PEN_2", "quantity": 3, "unit_price": "0.99"},
            ],
        }
    )

    assert order.total == Decimal("21.97")


@pytest.mark.parametrize(
    "item",
    [
        {"sku": ""},
        {"sku": "x" * 65},
        {"sku": "has space"},
        {"quantity": 0},
        {"quantity": 10_001},
        {"unit_price": "-0.01"},
        {"unit_price": "1.001"},
        {"colour": "red"},
    ],
)
def test_invalid_items_are_rejected(item: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(_order(**item))


@pytest.mark.parametrize(
    "item",
    [{"sku": "a"}, {"sku": "A.b_c-9" * 9 + "x"}, {"quantity": 10_000}, {"unit_price": "0"}],
)
def test_boundary_items_are_accepted(item: dict[str, object]) -> None:
    assert OrderCreate.model_validate(_order(**item)).items[0]


def test_item_count_is_limited() -> None:
    line = {"sku": "A", "quantity": 1, "unit_price": "1.00"}
    with pytest.raises(ValidationError, match="at least 1"):
        OrderCreate.model_validate({"customer_email": "ada@example.com", "items": []})
    with pytest.raises(ValidationError, match="at most 100"):
        OrderCreate.model_validate({"customer_email": "ada@example.com", "items": [line] * 101})


def test_customer_email_must_be_an_address() -> None:
    with pytest.raises(ValidationError, match="customer_email"):
        OrderCreate.model_validate({"customer_email": "nobody", "items": []})
