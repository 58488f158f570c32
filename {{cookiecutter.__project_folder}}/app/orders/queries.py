"""Reads of orders: what GET routes answer with.

A read changes nothing, so it needs neither the unit of work nor ORM objects: one Core statement
on a read connection (autocommit: no BEGIN/COMMIT round trips) selects the columns the response
needs, the items included (a JSON aggregate, so one statement and one snapshot), and each row is
validated once, into the response model. Writes go through ``OrderService`` and its repository.
"""

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from sqlalchemy import (
    JSON,
    RowMapping,
    Select,
    String,
    bindparam,
    cast,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.conditional import strong_etag
from app.core.database import ReadConnectionDep
from app.core.pagination import decode_cursor, encode_cursor
from app.models import Order, OrderItem
from app.orders.schemas import OrderFilters, OrderRead

# The items of the outer order, in order, as JSON; prices as text, so "9.50" keeps its scale.
_ITEMS = (
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_object(
                        literal("sku"),
                        OrderItem.sku,
                        literal("quantity"),
                        OrderItem.quantity,
                        literal("unit_price"),
                        cast(OrderItem.unit_price, String),
                    ),
                    OrderItem.position,
                )
            ),
            literal("[]", JSON),
            type_=JSON,
        )
    )
    .where(OrderItem.order_id == Order.id)
    .scalar_subquery()
)
_ORDERS = select(
    Order.id,
    Order.customer_email,
    Order.status,
    Order.total,
    Order.failure_reason,
    Order.created_at,
    Order.updated_at,
    Order.version,
    _ITEMS.label("items"),
)
# Built once: composing the WHERE clause per request costs more than running the statement.
_BY_ID = _ORDERS.where(Order.id == bindparam("order_id"))


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as a response shows it, and its entity tag."""

    order: OrderRead
    etag: str


def _view(row: RowMapping) -> OrderView:
    return OrderView(OrderRead.model_validate(row), strong_etag(str(row["version"])))


class OrderQueries:
    """The reads of orders, on one read connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def get(self, order_id: uuid.UUID) -> OrderView | None:
        """The order with its items, or None."""
        result = await self.connection.execute(_BY_ID, {"order_id": order_id})
        row = result.mappings().one_or_none()
        return None if row is None else _view(row)

    async def page(self, filters: OrderFilters) -> tuple[list[OrderRead], str | None]:
        """Orders matching the filters, oldest first, and the cursor of the next page (keyset
        pagination on (created_at, id): pages never repeat or skip a row)."""
        statement: Select[tuple[object, ...]] = _ORDERS
        if filters.status is not None:
            statement = statement.where(Order.status == filters.status)
        if filters.customer_email is not None:
            statement = statement.where(Order.customer_email == filters.customer_email)
        if filters.cursor is not None:
            after = decode_cursor(filters.cursor)
            statement = statement.where(tuple_(Order.created_at, Order.id) > tuple_(*after))
        statement = statement.order_by(Order.created_at, Order.id).limit(filters.limit + 1)
        rows = (await self.connection.execute(statement)).mappings().all()
        orders = [OrderRead.model_validate(row) for row in rows[: filters.limit]]
        if len(rows) <= filters.limit:
            return orders, None
        last = orders[-1]
        return orders, encode_cursor(last.created_at, last.id)


async def get_order_queries(connection: ReadConnectionDep) -> OrderQueries:
    """The reads of orders on the request's read connection."""
    return OrderQueries(connection)


OrderQueriesDep = Annotated[OrderQueries, Depends(get_order_queries)]
