"""All SQL of the orders domain."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import selectinload

from app.core.database import Base, DriverStatement
from app.core.repository import Repository
from app.models import Order, OrderItem
from app.orders.queries import ORDER_JSON, order_view
from app.orders.schemas import OrderView
from app.orders.status import OrderStatus

# A new order is two Core INSERTs on the tables, built once: no ORM objects to track and no flush
# to plan for a row that is written once and answered at once.
_ORDERS = Base.metadata.tables[Order.__tablename__]
_ITEMS = Base.metadata.tables[OrderItem.__tablename__]
_INSERT_ORDER = DriverStatement(
    insert(_ORDERS).returning(_ORDERS.c.created_at, _ORDERS.c.updated_at, _ORDERS.c.version),
    columns=["id", "customer_email", "status", "total"],
)
# All items in one statement whatever their number: one array per column, unnested into rows
# (numbered from 1 by WITH ORDINALITY). One execution, where an executemany costs one per row.
_NEW_ITEMS = (
    func.unnest(
        bindparam("skus", type_=ARRAY(_ITEMS.c.sku.type)),
        bindparam("quantities", type_=ARRAY(_ITEMS.c.quantity.type)),
        bindparam("unit_prices", type_=ARRAY(_ITEMS.c.unit_price.type)),
    )
    .table_valued("sku", "quantity", "unit_price", with_ordinality="number")
    .render_derived("item")
)
_INSERT_ITEMS = DriverStatement(
    insert(_ITEMS).from_select(
        ["order_id", "position", "sku", "quantity", "unit_price"],
        select(
            bindparam("order_id", type_=_ITEMS.c.order_id.type),
            _NEW_ITEMS.c.number - 1,
            _NEW_ITEMS.c.sku,
            _NEW_ITEMS.c.quantity,
            _NEW_ITEMS.c.unit_price,
        ),
    )
)


# A status change under a row lock, in Core: the lock reads what the rules need, the update
# sets the status and increments the version (the ETag) as the ORM's version counter does.
_LOCK = DriverStatement(
    select(_ORDERS.c.status, _ORDERS.c.version)
    .where(_ORDERS.c.id == bindparam("order_id"))
    .with_for_update()
)
# It answers with the order as the read builds it (RETURNING the same JSON): no second statement
# to read back what it changed.
_SET_STATUS = DriverStatement(
    update(_ORDERS)
    .where(_ORDERS.c.id == bindparam("order_id"))
    .values(
        status=bindparam("new_status", type_=_ORDERS.c.status.type),
        version=_ORDERS.c.version + 1,
        updated_at=func.clock_timestamp(),
    )
    .returning(ORDER_JSON, _ORDERS.c.version)
)


class StoredOrder(NamedTuple):
    """What the database set on a new order."""

    created_at: datetime
    updated_at: datetime
    version: int


class OrderRepository(Repository[Order]):
    model = Order

    async def get_with_items(
        self, order_id: uuid.UUID, *, for_update: bool = False
    ) -> Order | None:
        """The order and its items (items are never lazy-loaded), optionally locked."""
        return await self.get_by_id(
            order_id, options=(selectinload(Order.items),), for_update=for_update
        )

    async def insert(
        self,
        order_id: uuid.UUID,
        *,
        customer_email: str,
        total: Decimal,
        items: Sequence[tuple[str, int, Decimal]],
    ) -> StoredOrder:
        """Insert a pending order and its items, (sku, quantity, unit price) in order; return
        what the database set."""
        driver = await self.work.connection()
        stored = await driver.fetchrow(
            _INSERT_ORDER.sql,
            *_INSERT_ORDER.arguments(
                id=order_id,
                customer_email=customer_email,
                status=OrderStatus.PENDING,
                total=total,
            ),
        )
        skus, quantities, unit_prices = zip(*items, strict=True)
        await driver.execute(
            _INSERT_ITEMS.sql,
            *_INSERT_ITEMS.arguments(
                order_id=order_id,
                skus=list(skus),
                quantities=list(quantities),
                unit_prices=list(unit_prices),
            ),
        )
        if stored is None:  # pragma: no cover - an INSERT ... RETURNING returns its row
            msg = "the new order's row did not come back"
            raise RuntimeError(msg)
        return StoredOrder(stored["created_at"], stored["updated_at"], stored["version"])

    async def lock_status(self, order_id: uuid.UUID) -> tuple[OrderStatus, int] | None:
        """Lock the order's row until the transaction ends; its status and version, or None."""
        driver = await self.work.connection()
        row = await driver.fetchrow(_LOCK.sql, *_LOCK.arguments(order_id=order_id))
        return None if row is None else (OrderStatus(row["status"]), row["version"])

    async def set_status(self, order_id: uuid.UUID, status: OrderStatus) -> OrderView | None:
        """Set the status of a locked order (and count a new version); the order as it is now,
        as a read answers with it, or None when there is no such order."""
        driver = await self.work.connection()
        row = await driver.fetchrow(
            _SET_STATUS.sql, *_SET_STATUS.arguments(order_id=order_id, new_status=status)
        )
        return None if row is None else order_view(row)

    async def stale(
        self, status: OrderStatus, *, before: datetime, limit: int = 500
    ) -> list[Order]:
        """Orders in ``status`` untouched since ``before``, locked; rows another transaction
        holds are skipped, so concurrent sweeps never wait for each other."""
        statement = (
            select(Order)
            .where(Order.status == status, Order.updated_at < before)
            .order_by(Order.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.scalars(statement)).all())
