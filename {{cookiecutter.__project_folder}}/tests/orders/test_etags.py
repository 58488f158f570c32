"""Optimistic concurrency over HTTP: ETag on every order response, If-Match on the change."""

import asyncio
import uuid

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import Order
from app.orders.status import OrderStatus
from tests.helpers import wait_for_lock_waiters
from tests.orders.factories import make_order

CANCEL = {"status": "cancelled"}
NEW_ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "BOOK-1", "quantity": 2, "unit_price": "9.50"}],
}


async def test_created_order_carries_the_etag_that_get_returns(client: AsyncClient) -> None:
    created = await client.post("/api/v1/orders", json=NEW_ORDER)

    read = await client.get(created.headers["location"])

    assert created.headers["etag"].startswith('"')
    assert read.headers["etag"] == created.headers["etag"]


async def test_cancel_with_the_current_etag_succeeds_and_changes_the_etag(
    client: AsyncClient, session: AsyncSession
) -> None:
    order = await make_order(session)
    etag = (await client.get(f"/api/v1/orders/{order.id}")).headers["etag"]

    response = await client.patch(
        f"/api/v1/orders/{order.id}/status", json=CANCEL, headers={"If-Match": etag}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.headers["etag"] != etag
    assert response.headers["content-location"] == f"/api/v1/orders/{order.id}"
    assert (await client.get(f"/api/v1/orders/{order.id}")).headers["etag"] == (
        response.headers["etag"]
    )


@pytest.mark.parametrize(
    "if_match",
    ['"999"', 'W/"{current}"', '"999", W/"{current}"'],
    ids=["another tag", "weak tag of the current one", "list without the current tag"],
)
async def test_cancel_with_a_stale_etag_is_a_412_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, if_match: str
) -> None:
    order = await make_order(session)
    etag = (await client.get(f"/api/v1/orders/{order.id}")).headers["etag"]

    response = await client.patch(
        f"/api/v1/orders/{order.id}/status",
        json=CANCEL,
        headers={"If-Match": if_match.format(current=etag.strip('"'))},
    )

    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "precondition_failed"
    after = await client.get(f"/api/v1/orders/{order.id}")
    assert after.json()["status"] == "pending"
    assert after.headers["etag"] == etag


@pytest.mark.parametrize("if_match", ["*", '"999", {current}', " , {current} ,"])
async def test_cancel_accepts_any_tag_or_a_list_holding_the_current_one(
    client: AsyncClient, session: AsyncSession, if_match: str
) -> None:
    order = await make_order(session)
    etag = (await client.get(f"/api/v1/orders/{order.id}")).headers["etag"]

    response = await client.patch(
        f"/api/v1/orders/{order.id}/status",
        json=CANCEL,
        headers={"If-Match": if_match.format(current=etag)},
    )

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


@pytest.mark.parametrize("if_match", ["1", '"a"b"', "W/1", "**", "null"])
async def test_a_malformed_if_match_matches_nothing_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, if_match: str
) -> None:
    order = await make_order(session)

    response = await client.patch(
        f"/api/v1/orders/{order.id}/status", json=CANCEL, headers={"If-Match": if_match}
    )

    assert response.status_code == 412
    assert response.json()["code"] == "precondition_failed"
    await session.refresh(order)
    assert order.status is OrderStatus.PENDING


async def test_a_malformed_if_none_match_is_not_met(
    client: AsyncClient, session: AsyncSession
) -> None:
    order = await make_order(session)

    response = await client.get(f"/api/v1/orders/{order.id}", headers={"If-None-Match": "1"})

    assert response.status_code == 200
    assert response.json()["id"] == str(order.id)


async def test_unknown_order_is_a_404_whatever_the_if_match(client: AsyncClient) -> None:
    response = await client.patch(
        f"/api/v1/orders/{uuid.uuid4()}/status", json=CANCEL, headers={"If-Match": "*"}
    )

    assert response.status_code == 404


async def test_get_with_a_current_if_none_match_is_a_304(
    client: AsyncClient, session: AsyncSession
) -> None:
    order = await make_order(session)
    etag = (await client.get(f"/api/v1/orders/{order.id}")).headers["etag"]

    unchanged = await client.get(
        f"/api/v1/orders/{order.id}", headers={"If-None-Match": f'"0", W/{etag}'}
    )
    await client.patch(f"/api/v1/orders/{order.id}/status", json=CANCEL)
    changed = await client.get(f"/api/v1/orders/{order.id}", headers={"If-None-Match": etag})

    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == etag
    assert unchanged.content == b""
    assert changed.status_code == 200
    assert changed.json()["status"] == "cancelled"


async def test_concurrent_cancels_with_the_same_etag_let_exactly_one_win(
    committing_client: AsyncClient, committed: async_sessionmaker[AsyncSession]
) -> None:
    async with committed.begin() as arrange:
        order_id = (await make_order(arrange)).id
    etag = (await committing_client.get(f"/api/v1/orders/{order_id}")).headers["etag"]

    async with committed() as holder, committed() as observer:
        # Hold the row so that both requests are waiting for it at the same time.
        await holder.execute(select(Order).where(Order.id == order_id).with_for_update())
        requests = [
            asyncio.create_task(
                committing_client.patch(
                    f"/api/v1/orders/{order_id}/status", json=CANCEL, headers={"If-Match": etag}
                )
            )
            for _ in range(2)
        ]
        await wait_for_lock_waiters(observer, "SELECT orders.", count=2)
        await holder.rollback()
        responses = await asyncio.gather(*requests)

    assert sorted(r.status_code for r in responses) == [200, 412]
    async with committed() as check:
        order = await check.get_one(Order, order_id)
    assert order.status is OrderStatus.CANCELLED
    assert order.version == 2
