from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy import Column, Numeric

from app.core.types import DecimalFormat
from app.models import Order, OrderItem
from app.orders.schemas import MAX_ITEMS, MAX_QUANTITY, TOTAL, UNIT_PRICE, OrderCreate


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


def test_a_unit_price_beyond_what_the_database_stores_is_refused() -> None:
    # The first 500 this template had: 10000 x 9999999999.99 overflowed the total.
    item = {"sku": "A", "quantity": 10_000, "unit_price": "9999999999.99"}

    with pytest.raises(ValidationError) as refused:
        OrderCreate.model_validate({"customer_email": "ada@example.com", "items": [item]})

    assert [error["loc"] for error in refused.value.errors()] == [("items", 0, "unit_price")]


def test_the_largest_order_the_schema_admits_has_a_total_the_database_stores() -> None:
    item = {"sku": "A", "quantity": MAX_QUANTITY, "unit_price": str(UNIT_PRICE.maximum)}

    order = OrderCreate.model_validate(
        {"customer_email": "ada@example.com", "items": [item] * MAX_ITEMS}
    )

    assert order.total == MAX_ITEMS * MAX_QUANTITY * UNIT_PRICE.maximum
    assert order.total <= TOTAL.maximum


@pytest.mark.parametrize(
    ("column", "amount"),
    [(Order.__table__.c.total, TOTAL), (OrderItem.__table__.c.unit_price, UNIT_PRICE)],
)
def test_the_amount_formats_are_the_ones_of_the_columns(
    column: Column[Decimal], amount: DecimalFormat
) -> None:
    assert isinstance(column.type, Numeric)
    assert column.type.precision == amount.whole_digits + amount.decimal_places
    assert column.type.scale == amount.decimal_places
