"""Service rules that need real transactions: row locks and commits across connections."""

import asyncio
import uuid

import pytest
from httpx import AsyncClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.unit_of_work import Work
from app.models import Order
from app.orders.exceptions import InvalidTransition
from app.orders.repository import OrderRepository
from app.orders.status import OrderStatus
from app.orders.tasks import order_service
from tests.orders.factories import make_order


async def wait_until_blocked_on_a_lock(session: AsyncSession, backend_pid: int) -> None:
    """Poll pg_stat_activity until the other connection waits for a row lock."""
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    async with asyncio.timeout(10):
        # Polls the server's own state (no event to wait on exists), not a guessed delay.
        while True:
            waiting = await session.scalar(query, {"pid": backend_pid})
            # pg_stat_activity is read once per transaction: end it to see the next state.
            await session.rollback()
            if waiting == "Lock":
                return
            await asyncio.sleep(0.01)


async def backend_pid(session: AsyncSession) -> int:
    pid = await session.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


async def test_concurrent_status_changes_do_not_both_win(
    committed: async_sessionmaker[AsyncSession],
) -> None:
    async with committed.begin() as arrange:
        order_id = (await make_order(arrange)).id

    first, second, observer = committed(), committed(), committed()
    async with first, second, observer:
        await order_service(Work(session=first)).cancel(order_id)
        second_pid = await backend_pid(second)
        racing = asyncio.create_task(order_service(Work(session=second)).cancel(order_id))
        await wait_until_blocked_on_a_lock(observer, second_pid)
        await first.commit()

        with pytest.raises(InvalidTransition, match="from cancelled to cancelled"):
            await racing
        await second.rollback()

    async with committed() as check:
        assert await check.scalar(select(Order.status).where(Order.id == order_id)) == (
            OrderStatus.CANCELLED
        )


async def test_created_order_is_committed_for_other_connections(
    committing_client: AsyncClient, committed: async_sessionmaker[AsyncSession]
) -> None:
    response = await committing_client.post(
        "/api/v1/orders",
        json={
            "customer_email": "ed@example.com",
            "items": [{"sku": "A", "quantity": 1, "unit_price": "2.50"}],
        },
    )
    order_id = uuid.UUID(response.json()["id"])

    async with committed() as other:
        order = await OrderRepository(Work(session=other)).get_with_items(order_id)
    assert order is not None
    assert order.status is OrderStatus.PENDING
    assert [(item.sku, item.quantity) for item in order.items] == [("A", 1)]


async def test_cancel_waits_for_a_running_fulfilment_and_then_refuses(
    committed: async_sessionmaker[AsyncSession],
) -> None:
    async with committed.begin() as arrange:
        order_id = (await make_order(arrange, status=OrderStatus.PROCESSING)).id

    worker, client, observer = committed(), committed(), committed()
    async with worker, client, observer:
        # The fulfilment has locked and completed the order, not yet committed.
        await order_service(Work(session=worker)).fulfil(order_id)
        client_pid = await backend_pid(client)
        cancelling = asyncio.create_task(order_service(Work(session=client)).cancel(order_id))
        await wait_until_blocked_on_a_lock(observer, client_pid)
        await worker.commit()

        with pytest.raises(InvalidTransition, match="from completed to cancelled"):
            await cancelling
        await client.rollback()

    async with committed() as check:
        assert await check.scalar(select(Order.status).where(Order.id == order_id)) == (
            OrderStatus.COMPLETED
        )


async def test_fulfilment_after_a_cancel_leaves_the_order_cancelled(
    committed: async_sessionmaker[AsyncSession],
) -> None:
    async with committed.begin() as arrange:
        order_id = (await make_order(arrange, status=OrderStatus.PROCESSING)).id

    client, worker, observer = committed(), committed(), committed()
    async with client, worker, observer:
        await order_service(Work(session=client)).cancel(order_id)
        worker_pid = await backend_pid(worker)
        fulfilling = asyncio.create_task(order_service(Work(session=worker)).fulfil(order_id))
        await wait_until_blocked_on_a_lock(observer, worker_pid)
        await client.commit()
        await fulfilling
        await worker.commit()

    async with committed() as check:
        row = (
            await check.execute(select(Order.status, Order.version).where(Order.id == order_id))
        ).one()
    assert row.status is OrderStatus.CANCELLED
    assert row.version == 2  # created, cancelled; the fulfilment changed nothing
