"""What clients send and receive for orders."""

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from app.orders.status import OrderStatus

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Quantity = Annotated[int, Field(ge=1, le=10_000)]
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


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

    customer_email: EmailStr
    items: list[OrderItemIn] = Field(min_length=1, max_length=100)

    @property
    def total(self) -> Decimal:
        """The sum of quantity times unit price over all items."""
        return sum((item.unit_price * item.quantity for item in self.items), Decimal("0.00"))


class StatusChange(BaseModel):
    """A request to move an order to another status."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "cancelled"}]}
    )

    status: OrderStatus
