"""All SQL of the orders domain."""

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.core.repository import Repository
from app.models import Order
from app.orders.status import OrderStatus


class OrderRepository(Repository[Order]):
    model = Order

    async def get_with_items(
        self, order_id: uuid.UUID, *, for_update: bool = False
    ) -> Order | None:
        """The order and its items (items are never lazy-loaded), optionally locked."""
        return await self.get_by_id(
            order_id, options=(selectinload(Order.items),), for_update=for_update
        )

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
