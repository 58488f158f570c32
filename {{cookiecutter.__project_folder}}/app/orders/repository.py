"""All SQL of the orders domain."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import RowMapping, insert, select
from sqlalchemy.orm import selectinload

from app.core.database import Base
from app.core.repository import Repository
from app.models import Order, OrderItem
from app.orders.status import OrderStatus

# A new order is two Core INSERTs on the tables, built once: no ORM objects to track and no flush
# to plan for a row that is written once and answered at once.
_ORDERS = Base.metadata.tables[Order.__tablename__]
_ITEMS = Base.metadata.tables[OrderItem.__tablename__]
_INSERT_ORDER = insert(_ORDERS).returning(
    _ORDERS.c.created_at, _ORDERS.c.updated_at, _ORDERS.c.version
)
_INSERT_ITEMS = insert(_ITEMS)


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
    ) -> RowMapping:
        """Insert a pending order and its items, (sku, quantity, unit price) in order; return
        what the database set: ``created_at``, ``updated_at`` and ``version``."""
        result = await self.session.execute(
            _INSERT_ORDER,
            {
                "id": order_id,
                "customer_email": customer_email,
                "status": OrderStatus.PENDING,
                "total": total,
            },
        )
        stored = result.mappings().one()
        await self.session.execute(
            _INSERT_ITEMS,
            [
                {
                    "order_id": order_id,
                    "position": position,
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price": unit_price,
                }
                for position, (sku, quantity, unit_price) in enumerate(items)
            ],
        )
        return stored

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
