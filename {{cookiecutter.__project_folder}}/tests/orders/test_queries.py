import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.database import Reader
from app.orders.queries import OrderQueries
from app.orders.schemas import OrderFilters
from app.orders.status import OrderStatus
from tests.orders.factories import make_order


async def test_get_returns_none_for_an_unknown_id(connection: AsyncConnection) -> None:
    assert await OrderQueries(Reader.within(connection)).get(uuid.uuid4()) is None


async def test_get_reads_the_order_its_items_and_its_tag(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    order = await make_order(session)

    view = await OrderQueries(Reader.within(connection)).get(order.id)

    assert view is not None
    assert view.order.id == order.id
    assert [(i.sku, i.quantity, str(i.unit_price)) for i in view.order.items] == [
        (item.sku, item.quantity, str(item.unit_price)) for item in order.items
    ]
    assert view.order.total == order.total
    assert view.etag == f'"{order.version}"'


async def test_page_orders_by_creation_and_hands_out_a_cursor(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    orders = [await make_order(session) for _ in range(3)]
    queries = OrderQueries(Reader.within(connection))

    first, cursor = await queries.page(OrderFilters(limit=2))
    rest, last_cursor = await queries.page(OrderFilters(limit=2, cursor=cursor))

    assert [o.id for o in first + rest] == [o.id for o in orders]
    assert cursor is not None
    assert last_cursor is None


async def test_page_filters_by_status_and_keeps_the_scale_of_prices(
    session: AsyncSession, connection: AsyncConnection
) -> None:
    await make_order(session)
    processing = await make_order(session, status=OrderStatus.PROCESSING)

    page, _ = await OrderQueries(Reader.within(connection)).page(
        OrderFilters(status=OrderStatus.PROCESSING)
    )

    assert [o.id for o in page] == [processing.id]
    assert [str(item.unit_price) for item in page[0].items] == [
        str(item.unit_price) for item in processing.items
    ]
    assert all(isinstance(item.unit_price, Decimal) for item in page[0].items)
