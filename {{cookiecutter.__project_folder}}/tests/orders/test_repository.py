import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.unit_of_work import Work
from app.models import Order
from app.orders.repository import OrderRepository
from app.orders.status import OrderStatus
from tests.orders.factories import make_order


async def test_get_with_items_returns_none_for_an_unknown_id(session: AsyncSession) -> None:
    assert await OrderRepository(Work(session=session)).get_with_items(uuid.uuid4()) is None


async def test_order_status_is_stored_as_its_value(session: AsyncSession) -> None:
    order = await make_order(session, status=OrderStatus.PROCESSING)

    stored = await session.scalar(
        select(Order.__table__.c.status).where(Order.__table__.c.id == order.id)
    )
    assert stored == "processing"


async def test_insert_stores_the_order_and_its_items_in_their_order(session: AsyncSession) -> None:
    order_id = uuid.uuid4()
    items = [("C", 3, Decimal("0.01")), ("A", 1, Decimal("999999.99")), ("B", 2, Decimal("9.50"))]

    stored = await OrderRepository(Work(session=session)).insert(
        order_id, customer_email="ada@example.com", total=Decimal("1000019.02"), items=items
    )

    assert stored.version == 1
    assert stored.created_at <= stored.updated_at
    order = await OrderRepository(Work(session=session)).get_with_items(order_id)
    assert order is not None
    assert order.status is OrderStatus.PENDING
    assert order.total == Decimal("1000019.02")
    assert [(i.position, i.sku, i.quantity, i.unit_price) for i in order.items] == [
        (position, *item) for position, item in enumerate(items)
    ]
