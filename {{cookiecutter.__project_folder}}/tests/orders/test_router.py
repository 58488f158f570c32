import uuid
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Order
from app.orders.schemas import MAX_ITEMS, MAX_QUANTITY, UNIT_PRICE
from app.orders.status import OrderStatus
from tests.orders.factories import make_order

NEW_ORDER = {
    "customer_email": "ada@example.com",
    "items": [
        {"sku": "BOOK-1", "quantity": 2, "unit_price": "9.50"},
        {"sku": "PEN.2_b", "quantity": 1, "unit_price": "0.99"},
    ],
}


async def order_count(session: AsyncSession) -> int:
    """Orders the test's transaction sees (other tests on this database may have left some)."""
    return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def test_create_returns_the_pending_order_with_its_location(client: AsyncClient) -> None:
    response = await client.post("/api/v1/orders", json=NEW_ORDER)

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/v1/orders/{body['id']}"
    assert uuid.UUID(body["id"])
    assert body["status"] == "pending"
    assert body["customer_email"] == "ada@example.com"
    assert body["items"] == NEW_ORDER["items"]
    assert body["total"] == "19.99"
    assert body["failure_reason"] is None
    assert body["updated_at"] >= body["created_at"]


@pytest.mark.parametrize("unit_price", ["9.50", "9.5", 9.5, 3])
async def test_created_order_can_be_read_back(client: AsyncClient, unit_price: str | float) -> None:
    order = NEW_ORDER | {"items": [{"sku": "A", "quantity": 3, "unit_price": unit_price}]}
    created = (await client.post("/api/v1/orders", json=order)).json()

    response = await client.get(f"/api/v1/orders/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert created["items"][0]["unit_price"] == f"{Decimal(str(unit_price)):.2f}"


async def test_create_refuses_a_unit_price_beyond_the_schema(
    client: AsyncClient, session: AsyncSession
) -> None:
    # Once a 500: each value fitted the schema, their product overflowed the total.
    items = [{"sku": "A", "quantity": 10_000, "unit_price": "9999999999.99"}]
    before = await order_count(session)

    response = await client.post("/api/v1/orders", json=NEW_ORDER | {"items": items})

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    errors = response.json()["errors"]
    assert [error["loc"] for error in errors] == [["body", "items", 0, "unit_price"]]
    assert await order_count(session) == before


async def test_the_largest_order_the_schema_admits_is_stored(client: AsyncClient) -> None:
    item = {"sku": "A", "quantity": MAX_QUANTITY, "unit_price": str(UNIT_PRICE.maximum)}

    response = await client.post("/api/v1/orders", json=NEW_ORDER | {"items": [item] * MAX_ITEMS})

    assert response.status_code == 201
    assert Decimal(response.json()["total"]) == MAX_ITEMS * MAX_QUANTITY * UNIT_PRICE.maximum


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"customer_email": "not-an-email"}, ["body", "customer_email"]),
        ({"items": []}, ["body", "items"]),
        (
            {"items": [{"sku": "A", "quantity": 0, "unit_price": "1.00"}]},
            ["body", "items", 0, "quantity"],
        ),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "1.005"}]},
            ["body", "items", 0, "unit_price"],
        ),
        (
            {"items": [{"sku": "A B", "quantity": 1, "unit_price": "1.00"}]},
            ["body", "items", 0, "sku"],
        ),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "-1"}]},
            ["body", "items", 0, "unit_price"],
        ),
        ({"discount": "10%"}, ["body", "discount"]),
    ],
)
async def test_create_rejects_invalid_orders(
    client: AsyncClient, session: AsyncSession, change: dict[str, Any], location: list[Any]
) -> None:
    before = await order_count(session)

    response = await client.post("/api/v1/orders", json=NEW_ORDER | change)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["loc"] for error in response.json()["errors"]] == [location]
    assert await order_count(session) == before


async def test_create_accepts_a_hundred_items(client: AsyncClient) -> None:
    items = [{"sku": f"SKU-{n}", "quantity": 1, "unit_price": "1.00"} for n in range(100)]

    response = await client.post("/api/v1/orders", json=NEW_ORDER | {"items": items})

    assert response.status_code == 201
    assert response.json()["total"] == "100.00"
    assert [item["sku"] for item in response.json()["items"]] == [i["sku"] for i in items]


async def test_unknown_order_is_a_404_problem(client: AsyncClient) -> None:
    order_id = uuid.uuid4()

    response = await client.get(f"/api/v1/orders/{order_id}")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "order_not_found"
    assert response.json()["detail"] == f"No order with id {order_id}"


async def test_malformed_order_id_is_a_422_problem(client: AsyncClient) -> None:
    response = await client.get("/api/v1/orders/not-a-uuid")

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["path", "order_id"]


async def test_list_filters_by_status_and_customer(
    client: AsyncClient, session: AsyncSession
) -> None:
    wanted = await make_order(session, status=OrderStatus.FAILED, customer_email="bo@example.com")
    await make_order(session, status=OrderStatus.FAILED, customer_email="cy@example.com")
    await make_order(session, status=OrderStatus.PENDING, customer_email="bo@example.com")

    response = await client.get(
        "/api/v1/orders", params={"status": "failed", "customer_email": "bo@example.com"}
    )

    assert response.status_code == 200
    assert [order["id"] for order in response.json()["items"]] == [str(wanted.id)]
    assert response.json()["next_cursor"] is None


async def test_list_pages_through_every_order_once_while_orders_arrive(
    client: AsyncClient, session: AsyncSession
) -> None:
    existing = [str((await make_order(session)).id) for _ in range(23)]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/orders", params=params)).json()
        seen += [order["id"] for order in page["items"]]
        await make_order(session)  # a new order between every two pages
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen)), "an order appeared twice"
    assert seen[: len(existing)] == existing, "an existing order was skipped or reordered"


@pytest.mark.parametrize("limit", [0, 101, -1])
async def test_list_rejects_a_bad_limit(client: AsyncClient, limit: int) -> None:
    response = await client.get("/api/v1/orders", params={"limit": limit})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "limit"]


async def test_list_rejects_a_malformed_cursor(client: AsyncClient) -> None:
    response = await client.get("/api/v1/orders", params={"cursor": "garbage"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    "target", [s for s in OrderStatus if s is not OrderStatus.CANCELLED], ids=str
)
async def test_change_status_refuses_every_status_but_cancelled(
    client: AsyncClient, session: AsyncSession, target: OrderStatus
) -> None:
    # Only the worker moves orders to processing, completed or failed.
    order = await make_order(session, status=OrderStatus.PENDING)

    response = await client.patch(f"/api/v1/orders/{order.id}/status", json={"status": target})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", "status"]
    await session.refresh(order, attribute_names=["status"])
    assert order.status is OrderStatus.PENDING


@pytest.mark.parametrize("current", [OrderStatus.PENDING, OrderStatus.PROCESSING], ids=str)
async def test_cancel_of_a_pending_or_processing_order_succeeds(
    client: AsyncClient, session: AsyncSession, current: OrderStatus
) -> None:
    order = await make_order(session, status=current)

    response = await client.patch(f"/api/v1/orders/{order.id}/status", json={"status": "cancelled"})

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["updated_at"] > response.json()["created_at"]
    await session.refresh(order, attribute_names=["status"])
    assert order.status is OrderStatus.CANCELLED


@pytest.mark.parametrize(
    "current", [OrderStatus.COMPLETED, OrderStatus.FAILED, OrderStatus.CANCELLED], ids=str
)
async def test_cancel_of_a_finished_order_is_a_409(
    client: AsyncClient, session: AsyncSession, current: OrderStatus
) -> None:
    order = await make_order(session, status=current)

    response = await client.patch(f"/api/v1/orders/{order.id}/status", json={"status": "cancelled"})

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_status_transition"
    assert response.json()["detail"] == f"An order cannot move from {current} to cancelled"
    await session.refresh(order, attribute_names=["status"])
    assert order.status is current


async def test_change_status_of_an_unknown_order_is_a_404(client: AsyncClient) -> None:
    response = await client.patch(
        f"/api/v1/orders/{uuid.uuid4()}/status", json={"status": "cancelled"}
    )

    assert response.status_code == 404


async def test_change_status_rejects_an_unknown_status(
    client: AsyncClient, session: AsyncSession
) -> None:
    order = await make_order(session)

    response = await client.patch(f"/api/v1/orders/{order.id}/status", json={"status": "lost"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "status"]


async def test_openapi_documents_every_order_route(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    unavailable = ["database_busy", "database_timeout", "database_unavailable"]
    stored = ["value_too_long", "value_out_of_range", "invalid_value", "constraint_violation"]
    expected = {
        ("/api/v1/orders", "post"): (
            "create_order",
            {
                "400": ["malformed_request"],
                "409": ["idempotency_key_reused", "duplicate", "reference_conflict"],
                "422": ["validation_error", *stored],
                "503": unavailable,
            },
        ),
        ("/api/v1/orders", "get"): (
            "list_orders",
            {"422": ["validation_error"], "503": unavailable},
        ),
        ("/api/v1/orders/{order_id}", "get"): (
            "get_order",
            {"404": ["order_not_found"], "422": ["validation_error"], "503": unavailable},
        ),
        ("/api/v1/orders/{order_id}/status", "patch"): (
            "change_status",
            {
                "400": ["malformed_request"],
                "404": ["order_not_found"],
                "409": ["invalid_status_transition", "duplicate", "reference_conflict"],
                "412": ["precondition_failed"],
                "422": ["validation_error", *stored],
                "503": unavailable,
            },
        ),
    }
    for (path, method), (operation_id, errors) in expected.items():
        operation = paths[path][method]
        assert operation["operationId"] == operation_id
        documented = {
            status: response["x-error-codes"]
            for status, response in operation["responses"].items()
            if int(status) >= 400 and status != "500"
        }
        assert documented == errors, (path, method)
        assert operation["summary"]
        assert operation["description"]
    created = paths["/api/v1/orders"]["post"]["responses"]["201"]
    assert {"Location", "ETag", "Idempotent-Replayed", "X-Request-ID"} <= set(created["headers"])
    assert set(created["links"]) == {"GetOrder", "ChangeStatus"}
    for path, method in (
        ("/api/v1/orders/{order_id}", "get"),
        ("/api/v1/orders/{order_id}/status", "patch"),
    ):
        assert "ETag" in paths[path][method]["responses"]["200"]["headers"]
    retry_after = paths["/api/v1/orders"]["get"]["responses"]["503"]["headers"]
    assert "Retry-After" in retry_after


async def test_openapi_offers_clients_only_the_cancelled_status(client: AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]

    assert schemas["StatusChange"]["properties"]["status"]["enum"] == ["cancelled"]


async def test_openapi_documents_the_request_headers(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    def headers(path: str, method: str) -> set[str]:
        parameters = paths[path][method].get("parameters", [])
        return {p["name"] for p in parameters if p["in"] == "header" and p.get("description")}

    assert headers("/api/v1/orders", "post") == {"Idempotency-Key"}
    assert headers("/api/v1/orders/{order_id}", "get") == {"If-None-Match"}
    assert headers("/api/v1/orders/{order_id}/status", "patch") == {"If-Match"}
