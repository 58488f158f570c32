import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Order
from app.orders.repository import OrderRepository
from app.orders.status import OrderStatus
from tests.orders.factories import make_order


async def test_get_with_items_returns_none_for_an_unknown_id(session: AsyncSession) -> None:
    assert await OrderRepository(session).get_with_items(uuid.uuid4()) is None


async def test_order_status_is_stored_as_its_value(session: AsyncSession) -> None:
    order = await make_order(session, status=OrderStatus.PROCESSING)

    stored = await session.scalar(
        select(Order.__table__.c.status).where(Order.__table__.c.id == order.id)
    )
    assert stored == "processing"
