"""What clients send and receive for orders."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, CursorText
from app.core.types import DecimalFormat, Email
from app.orders.status import OrderStatus

MAX_ITEMS = 100
MAX_QUANTITY = 10_000
# As order_items.unit_price is stored: NUMERIC(8, 2).
UNIT_PRICE = DecimalFormat(whole_digits=6, decimal_places=2)
# As orders.total is stored: NUMERIC(14, 2), which holds the largest order the limits above
# allow (MAX_ITEMS * MAX_QUANTITY * the largest unit price; a test checks): every order the
# schema admits can be stored, so the schema states every limit there is.
TOTAL = DecimalFormat(whole_digits=12, decimal_places=2)

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Price = Annotated[Decimal, UNIT_PRICE]


class OrderItemIn(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(extra="forbid")

    sku: Sku = Field(examples=["BOOK-1"])
    quantity: Quantity = Field(examples=[2])
    unit_price: Price = Field(examples=["9.50"])


class OrderCreate(BaseModel):
    """A new order: who buys, and what."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_email": "ada@example.com",
                    "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price": "9.50"}],
                }
            ]
        },
    )

    customer_email: Email
    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_ITEMS)

    @property
    def total(self) -> Decimal:
        """The sum of quantity times unit price over all items."""
        return sum((item.unit_price * item.quantity for item in self.items), Decimal("0.00"))


class StatusChange(BaseModel):
    """A client's change of an order's status: cancelling is the only one; the worker makes
    the others (processing, completed, failed)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "cancelled"}]}
    )

    # "enum" besides pydantic's "const", for client generators that only read enums.
    status: Literal[OrderStatus.CANCELLED] = Field(json_schema_extra={"enum": ["cancelled"]})


class OrderItemRead(BaseModel):
    """One line of an order, as stored."""

    model_config = ConfigDict(from_attributes=True)

    sku: str = Field(examples=["BOOK-1"])
    quantity: int = Field(examples=[2])
    unit_price: Decimal = Field(examples=["9.50"])


class OrderRead(BaseModel):
    """An order as clients see it; decimals are strings, so no precision is lost."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b6f4c9e-2a55-4d5e-9d1a-3f1f2a7b8c9d",
                    "customer_email": "ada@example.com",
                    "status": "pending",
                    "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price": "9.50"}],
                    "total": "19.00",
                    "failure_reason": None,
                    "created_at": "2026-11-27T10:00:00.000000Z",
                    "updated_at": "2026-11-27T10:00:00.000000Z",
                }
            ]
        },
    )

    id: UUID
    customer_email: str
    status: OrderStatus
    items: list[OrderItemRead]
    total: Decimal
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class OrderFilters(BaseModel):
    """Query parameters of the order list."""

    model_config = ConfigDict(extra="forbid")

    status: OrderStatus | None = Field(default=None, description="Only orders in this status.")
    customer_email: Email | None = Field(
        default=None, description="Only the orders of this customer (exact address)."
    )
    limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="How many orders one page holds."
    )
    cursor: CursorText | None = Field(
        default=None,
        description="Where the page starts: the `next_cursor` of the previous page; omit it for "
        "the first page. Cursors are opaque.",
    )


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as a response shows it, and its entity tag (for ``ETag``)."""

    order: OrderRead
    etag: str
