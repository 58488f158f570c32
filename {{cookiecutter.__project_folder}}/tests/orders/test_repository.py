import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Order
from app.orders.repository import OrderRepository
from app.orders.schemas import OrderFilters
from app.orders.status import OrderStatus
from tests.orders.factories import make_order


async def test_get_with_items_returns_none_for_an_unknown_id(session: AsyncSession) -> None:
    assert await OrderRepository(session).get_with_items(uuid.uuid4()) is None


async def test_list_page_orders_by_creation_and_hands_out_a_cursor(session: AsyncSession) -> None:
    orders = [await make_order(session) for _ in range(3)]
    repository = OrderRepository(session)

    first, cursor = await repository.list_page(OrderFilters(limit=2))
    rest, last_cursor = await repository.list_page(OrderFilters(limit=2, cursor=cursor))

    assert [o.id for o in first + rest] == [o.id for o in orders]
    assert cursor is not None
    assert last_cursor is None


async def test_list_page_loads_items_eagerly(session: AsyncSession) -> None:
    await make_order(session)
    session.expunge_all()

    [order], _ = await OrderRepository(session).list_page(OrderFilters(status=OrderStatus.PENDING))

    assert [item.sku for item in order.items] == ["BOOK-1"]


async def test_order_status_is_stored_as_its_value(session: AsyncSession) -> None:
    order = await make_order(session, status=OrderStatus.PROCESSING)

    stored = await session.scalar(
        select(Order.__table__.c.status).where(Order.__table__.c.id == order.id)
    )
    assert stored == "processing"
