"""Idempotent order creation: Idempotency-Key on POST /api/v1/orders."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.outbox import Outbox
from app.main import create_app
from app.models import IdempotencyRecord, Order, OutboxMessage
from app.settings import Settings
from app.worker.broker import broker
from tests.helpers import lifespan_client, wait_for_lock_waiters


def new_order(email: str = "ada@example.com", quantity: int = 2) -> dict[str, Any]:
    return {
        "customer_email": email,
        "items": [{"sku": "BOOK-1", "quantity": quantity, "unit_price": "9.50"}],
    }


async def orders_of(session: AsyncSession, email: str) -> int:
    count = await session.scalar(
        select(func.count()).select_from(Order).where(Order.customer_email == email)
    )
    assert count is not None
    return count


async def test_a_retry_with_the_same_key_replays_the_first_response(
    client: AsyncClient, session: AsyncSession
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    key = str(uuid.uuid4())

    first = await client.post(
        "/api/v1/orders", json=new_order(email), headers={"Idempotency-Key": key}
    )
    # The draft's form of the key (a structured-field string) names the same key.
    second = await client.post(
        "/api/v1/orders", json=new_order(email), headers={"Idempotency-Key": f'"{key}"'}
    )

    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["content-type"] == "application/json"
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await orders_of(session, email) == 1


async def test_the_same_key_with_another_body_is_refused(
    client: AsyncClient, session: AsyncSession
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    headers = {"Idempotency-Key": "key-1"}
    await client.post("/api/v1/orders", json=new_order(email), headers=headers)

    response = await client.post(
        "/api/v1/orders", json=new_order(email, quantity=3), headers=headers
    )

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency_key_reused"
    assert await orders_of(session, email) == 1


async def test_requests_without_a_key_or_with_other_keys_each_create_an_order(
    client: AsyncClient, session: AsyncSession
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    for headers in ({}, {}, {"Idempotency-Key": "a"}, {"Idempotency-Key": "b"}):
        response = await client.post("/api/v1/orders", json=new_order(email), headers=headers)
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers

    assert await orders_of(session, email) == 4


@pytest.mark.parametrize("key", ["", "a b", "k" * 256, "clé", '"a', '""'])
async def test_a_malformed_key_is_a_422(
    client: AsyncClient, session: AsyncSession, key: str
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"

    response = await client.post(
        "/api/v1/orders",
        json=new_order(email),
        headers={b"Idempotency-Key": key.encode()},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await orders_of(session, email) == 0


async def test_a_key_may_be_used_again_once_it_expired(
    client: AsyncClient, session: AsyncSession
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    headers = {"Idempotency-Key": "expiring"}
    first = await client.post("/api/v1/orders", json=new_order(email), headers=headers)
    await session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.key == "expiring")
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )

    again = await client.post("/api/v1/orders", json=new_order(email, quantity=3), headers=headers)

    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert await orders_of(session, email) == 2


async def test_keys_expire_after_the_configured_time(
    client: AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    await client.post("/api/v1/orders", json=new_order(), headers={"Idempotency-Key": "ttl"})

    record = await session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "ttl"))

    assert record is not None
    assert record.scope == "POST /api/v1/orders"
    lifetime = (record.expires_at - record.created_at).total_seconds()
    assert lifetime == pytest.approx(settings.idempotency.key_ttl, abs=1)


@pytest.fixture
async def api(fresh_queue: Settings) -> AsyncIterator[FastAPI]:
    """The API on the test's own queue (so its tasks can be counted), committing for real;
    ``app.state.client`` is an HTTP client for it."""
    app = create_app(fresh_queue)
    async with lifespan_client(app) as client:
        app.state.client = client
        yield app


async def test_two_identical_requests_at_once_create_one_order_and_one_task(
    api: FastAPI, committed: async_sessionmaker[AsyncSession]
) -> None:
    client: AsyncClient = api.state.client
    email = f"{uuid.uuid4().hex}@example.com"
    headers = {"Idempotency-Key": str(uuid.uuid4())}

    async with committed() as holder, committed() as observer:
        # Hold inserts into orders: the request that claimed the key waits there, holding it;
        # the other waits for the key. Both are then in flight at the same moment.
        await holder.execute(text("LOCK TABLE orders IN EXCLUSIVE MODE"))
        requests = [
            asyncio.create_task(
                client.post("/api/v1/orders", json=new_order(email), headers=headers)
            )
            for _ in range(2)
        ]
        await wait_for_lock_waiters(observer, "INSERT INTO idempotency_keys", count=1)
        await wait_for_lock_waiters(observer, "INSERT INTO orders", count=1)
        await holder.rollback()
        first, second = await asyncio.gather(*requests)

    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert first.headers["location"] == second.headers["location"]
    replayed = [r.headers.get("idempotent-replayed") for r in (first, second)]
    assert sorted(replayed, key=str) == [None, "true"]
    # The rows of published tasks are deleted in the background: wait for that first.
    outbox = api.state.outbox
    assert isinstance(outbox, Outbox)
    await outbox.settle()
    async with committed() as check:
        assert await orders_of(check, email) == 1
        waiting = await check.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.queue == broker.queue)
        )
    published = (await broker.jetstream.stream_info(broker.config.stream)).state.messages
    assert published + (waiting or 0) == 1
