"""Arrange orders directly in the database, in any state."""

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Order, OrderItem
from app.orders.status import OrderStatus


async def make_order(
    session: AsyncSession,
    *,
    status: OrderStatus = OrderStatus.PENDING,
    customer_email: str = "ada@example.com",
    sku: str = "BOOK-1",
) -> Order:
    """Insert an order with one item (two at 9.50) and flush it."""
    order = Order(
        customer_email=customer_email,
        status=status,
        total=Decimal("19.00"),
        items=[OrderItem(position=0, sku=sku, quantity=2, unit_price=Decimal("9.50"))],
    )
    session.add(order)
    await session.flush()
    return order
