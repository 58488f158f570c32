"""Fixtures of the orders tests."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.models import IdempotencyRecord, Order, OutboxMessage


@pytest.fixture
async def committed(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions that really commit; every order (and outbox row, and idempotency key) created
    meanwhile is deleted after the test."""
    factory = async_sessionmaker(engine, expire_on_commit=False)
    async with factory() as probe:
        before = set((await probe.scalars(select(Order.id))).all())
        waiting = set((await probe.scalars(select(OutboxMessage.id))).all())
        started = await probe.scalar(select(func.clock_timestamp()))
    yield factory
    async with factory.begin() as cleanup:
        await cleanup.execute(delete(Order).where(Order.id.not_in(before)))
        await cleanup.execute(delete(OutboxMessage).where(OutboxMessage.id.not_in(waiting)))
        await cleanup.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at >= started)
        )
