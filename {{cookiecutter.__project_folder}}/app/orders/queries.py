"""Reads of orders: what GET routes answer with.

A read changes nothing, so it needs neither the unit of work nor ORM objects: one Core statement,
compiled once (``DriverStatement``) and run on asyncpg's connection in autocommit mode (no
BEGIN/COMMIT round trips, no SQLAlchemy execution layer), has PostgreSQL build each order as JSON,
the items included (one statement, one snapshot), and the response model validates that text
once, in pydantic's JSON parser. Writes go through ``OrderService`` and its repository.
"""

import uuid
from datetime import datetime
from functools import cache

import asyncpg
from sqlalchemy import (
    JSON,
    ColumnElement,
    ColumnExpressionArgument,
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from app.core.conditional import strong_etag
from app.core.database import DriverStatement, Reader
from app.core.pagination import decode_cursor, encode_cursor
from app.models import Order, OrderItem
from app.orders.schemas import OrderFilters, OrderRead, OrderView

# Timestamps in the form the API answers with, whatever the session's time zone.
_ISO_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def _utc(column: ColumnExpressionArgument[datetime]) -> ColumnElement[str]:
    return func.to_char(func.timezone("UTC", column), _ISO_UTC, type_=String)


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
            literal([], JSON),
            type_=JSON,
        )
    )
    .where(OrderItem.order_id == Order.id)
    .scalar_subquery()
)
# The whole order as one JSON text, built by PostgreSQL: the response model validates it straight
# from JSON (pydantic's fast path), with no row objects or type conversions in between. A change
# answers with it too (``UPDATE ... RETURNING``, in the repository).
ORDER_JSON = cast(
    func.json_build_object(
        literal("id"),
        Order.id,
        literal("customer_email"),
        Order.customer_email,
        literal("status"),
        Order.status,
        literal("items"),
        _ITEMS,
        literal("total"),
        cast(Order.total, String),
        literal("failure_reason"),
        Order.failure_reason,
        literal("created_at"),
        _utc(Order.created_at),
        literal("updated_at"),
        _utc(Order.updated_at),
    ),
    Text,
).label("order")
# Built and compiled once: composing the WHERE clause per request costs more than running it.
_BY_ID = DriverStatement(select(ORDER_JSON, Order.version).where(Order.id == bindparam("order_id")))
_PAGE: Select[str] = select(ORDER_JSON)


def order_view(row: asyncpg.Record) -> OrderView:
    """The order of a row holding ``ORDER_JSON`` and its version, with its entity tag."""
    order: str = row["order"]
    return OrderView(OrderRead.model_validate_json(order), strong_etag(str(row["version"])))


class OrderQueries:
    """The reads of orders; each takes a read connection for its statement only."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    async def get(self, order_id: uuid.UUID) -> OrderView | None:
        """The order with its items, or None."""
        async with self.reader.connection() as connection:
            row = await connection.fetchrow(_BY_ID.sql, *_BY_ID.arguments(order_id=order_id))
        return None if row is None else order_view(row)

    async def page(self, filters: OrderFilters) -> tuple[list[OrderRead], str | None]:
        """Orders matching the filters, oldest first, and the cursor of the next page (keyset
        pagination on (created_at, id): pages never repeat or skip a row)."""
        params: dict[str, object] = {"limit": filters.limit + 1}
        if filters.status is not None:
            params["status"] = filters.status
        if filters.customer_email is not None:
            params["customer_email"] = filters.customer_email
        if filters.cursor is not None:
            params["after_created_at"], params["after_id"] = decode_cursor(filters.cursor)
        statement = _page_statement(
            by_status=filters.status is not None,
            by_customer=filters.customer_email is not None,
            after=filters.cursor is not None,
        )
        async with self.reader.connection() as connection:
            found: list[str] = [
                row[0]
                for row in await connection.fetch(statement.sql, *statement.arguments(**params))
            ]
        orders = [OrderRead.model_validate_json(order) for order in found[: filters.limit]]
        if len(found) <= filters.limit:
            return orders, None
        last = orders[-1]
        return orders, encode_cursor(last.created_at, last.id)


@cache
def _page_statement(*, by_status: bool, by_customer: bool, after: bool) -> DriverStatement:
    """The page query for one combination of filters, built once (values are bound per call)."""
    statement = _PAGE
    if by_status:
        statement = statement.where(Order.status == bindparam("status"))
    if by_customer:
        statement = statement.where(Order.customer_email == bindparam("customer_email"))
    if after:
        statement = statement.where(
            tuple_(Order.created_at, Order.id)
            > tuple_(bindparam("after_created_at"), bindparam("after_id"))
        )
    return DriverStatement(statement.order_by(Order.created_at, Order.id).limit(bindparam("limit")))
