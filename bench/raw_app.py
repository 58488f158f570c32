"""The raw limit: the orders API of a rendered project with no framework beyond Starlette.

``api_bench.py`` starts it next to the project's API, on the same database, and measures both.
It serves the same JSON from the same tables as the example domain (``/orders`` instead of
``/api/v1/orders``), plainly and correctly: an asyncpg pool of 10 connections (the project's
``DATABASE_POOL_SIZE`` default), one SQL statement per read, orjson, and for a new order one
transaction and then one JetStream publish with a ``Nats-Msg-Id``. No layers, no logging, no
validation beyond what keeps the data correct.

Configured by the environment: ``BENCH_RAW_DSN`` (a ``postgresql://`` URL for asyncpg),
``BENCH_RAW_NATS_URL`` and ``BENCH_RAW_SUBJECT`` (the subject of a stream that exists).
Run with ``uvicorn --factory raw_app:create_app --app-dir <template>/bench``.
"""

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import asyncpg
import nats
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

POOL_SIZE = 10
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
STATUSES_TO_CANCEL = ("pending", "processing")
CENT = Decimal("0.01")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

ORDER = "o.id, o.customer_email, o.status, o.total, o.failure_reason, o.created_at, "
ORDER += "o.updated_at, o.version, i.sku, i.quantity, i.unit_price"
GET_ORDER = f"""
SELECT {ORDER} FROM orders o LEFT JOIN order_items i ON i.order_id = o.id
WHERE o.id = $1 ORDER BY i.position
"""  # noqa: S608 - constant SQL, no input in it
LIST_PAGE = f"""
WITH o AS (SELECT * FROM orders ORDER BY created_at, id LIMIT $1)
SELECT {ORDER} FROM o LEFT JOIN order_items i ON i.order_id = o.id
ORDER BY o.created_at, o.id, i.position
"""  # noqa: S608 - constant SQL, no input in it
INSERT_ORDER = """
INSERT INTO orders (id, customer_email, status, total) VALUES ($1, $2, 'pending', $3)
RETURNING created_at, updated_at, version
"""
INSERT_ITEMS = """
INSERT INTO order_items (order_id, position, sku, quantity, unit_price)
SELECT $1, t.position - 1, t.sku, t.quantity, t.unit_price
FROM unnest($2::text[], $3::int[], $4::numeric[]) WITH ORDINALITY
    AS t(sku, quantity, unit_price, position)
"""
CANCEL = f"""
WITH o AS (
    UPDATE orders SET status = 'cancelled', version = version + 1,
        updated_at = clock_timestamp()
    WHERE id = $1 AND status IN ('pending', 'processing') RETURNING *
)
SELECT {ORDER} FROM o LEFT JOIN order_items i ON i.order_id = o.id ORDER BY i.position
"""  # noqa: S608 - constant SQL, no input in it
STATUS_OF = "SELECT status FROM orders WHERE id = $1"
# The size of the taskiq message of orders.process (about 135 bytes).
TASK_TEMPLATE = '{{"task_id":"{task}","task_name":"orders.process",'
TASK_TEMPLATE += '"args":["{order}"],"kwargs":{{}}}}'


@dataclass
class Resources:
    pool: "asyncpg.Pool[asyncpg.Record] | None" = None
    nats: Client | None = None
    jetstream: JetStreamContext | None = None
    subject: str = ""


resources = Resources()


def json_response(content: object, status_code: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(content, default=str, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def problem(status_code: int, title: str) -> Response:
    return Response(
        orjson.dumps({"title": title, "status": status_code}),
        status_code=status_code,
        media_type="application/problem+json",
    )


def orders_of(rows: Sequence[asyncpg.Record]) -> list[dict[str, object]]:
    """Orders with their items from joined rows (one per item, the order's columns repeated)."""
    found: list[dict[str, object]] = []
    last_id: object = None
    items: list[dict[str, object]] = []
    for order_id, email, status, total, reason, created, updated, version, *item in rows:
        if order_id != last_id:
            items = []
            last_id = order_id
            found.append(
                {
                    "id": order_id,
                    "customer_email": email,
                    "status": status,
                    "items": items,
                    "total": total,
                    "failure_reason": reason,
                    "created_at": created,
                    "updated_at": updated,
                    "version": version,
                }
            )
        sku, quantity, unit_price = item
        if sku is not None:
            items.append({"sku": sku, "quantity": quantity, "unit_price": unit_price})
    return found


def order_headers(order: dict[str, object], *, created: bool = False) -> dict[str, str]:
    """ETag and Content-Location (and Location, for a new order); takes the version out of
    the order."""
    version = order.pop("version")
    location = f"/orders/{order['id']}"
    headers = {"ETag": f'"{version}"', "Content-Location": location}
    if created:
        headers["Location"] = location
    return headers


def order_response(order: dict[str, object], status_code: int = 200) -> Response:
    headers = order_headers(order, created=status_code == 201)  # noqa: PLR2004 - HTTP status
    return json_response(order, status_code, **headers)


def pool() -> "asyncpg.Pool[asyncpg.Record]":
    if resources.pool is None:
        msg = "the app has not started"
        raise RuntimeError(msg)
    return resources.pool


async def order_by_id(order_id: uuid.UUID) -> dict[str, object] | None:
    """The order with its items and version, or None."""
    rows = await pool().fetch(GET_ORDER, order_id)
    return orders_of(rows)[0] if rows else None


async def first_page(limit: int) -> dict[str, object]:
    """The first ``limit`` orders, oldest first, and the cursor of the next page."""
    orders = orders_of(await pool().fetch(LIST_PAGE, limit + 1))
    next_cursor = None
    if len(orders) > limit:
        orders = orders[:limit]
        last = orders[-1]
        created_at = last["created_at"]
        if isinstance(created_at, datetime) and isinstance(last["id"], uuid.UUID):
            next_cursor = f"{(created_at - _EPOCH) // _MICROSECOND}-{last['id'].hex}"
    for order in orders:
        del order["version"]
    return {"items": orders, "next_cursor": next_cursor}


async def get_order(request: Request) -> Response:
    order = await order_by_id(request.path_params["order_id"])
    if order is None:
        return problem(404, "Order not found")
    return order_response(order)


async def list_orders(request: Request) -> Response:
    try:
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return problem(422, "limit is no integer")
    if not 1 <= limit <= MAX_LIMIT:
        return problem(422, f"limit must be 1 to {MAX_LIMIT}")
    return json_response(await first_page(limit))


class Invalid(Exception):
    """What is wrong with a request body."""


def parse_order(body: bytes) -> tuple[str, list[str], list[int], list[Decimal]]:
    """The email and the item columns of a new order; ``Invalid`` when it is no valid order."""
    try:
        data: object = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Invalid("the body is no JSON") from error
    if not isinstance(data, dict) or set(data) != {"customer_email", "items"}:
        raise Invalid("customer_email and items expected")
    email, items = data["customer_email"], data["items"]
    if not isinstance(email, str) or "@" not in email or len(email) > 254:  # noqa: PLR2004
        raise Invalid("customer_email is no address")
    if not isinstance(items, list) or not 1 <= len(items) <= 100:  # noqa: PLR2004
        raise Invalid("1 to 100 items expected")
    skus: list[str] = []
    quantities: list[int] = []
    prices: list[Decimal] = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"sku", "quantity", "unit_price"}:
            raise Invalid("sku, quantity and unit_price expected")
        sku, quantity = item["sku"], item["quantity"]
        if not isinstance(sku, str) or not 1 <= len(sku) <= 64:  # noqa: PLR2004
            raise Invalid("sku: 1 to 64 characters")
        if not isinstance(quantity, int) or not 1 <= quantity <= 10_000:  # noqa: PLR2004
            raise Invalid("quantity: 1 to 10000")
        skus.append(sku)
        quantities.append(quantity)
        prices.append(parse_price(item["unit_price"]))
    return normalized(email), skus, quantities, prices


def normalized(email: str) -> str:
    """The address with its domain in lower case, as the example stores it."""
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def parse_price(value: object) -> Decimal:
    """A unit price as NUMERIC(8, 2) holds it."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise Invalid("unit_price is no decimal")
    try:
        price = Decimal(str(value))
    except InvalidOperation as error:
        raise Invalid("unit_price is no decimal") from error
    if not price.is_finite() or price < 0 or price != price.quantize(CENT):
        raise Invalid("unit_price: a non-negative amount in cents")
    if price >= 1_000_000:  # noqa: PLR2004 - NUMERIC(8, 2)
        raise Invalid("unit_price too large")
    return price.quantize(CENT)


async def insert_order(
    email: str, skus: list[str], quantities: list[int], prices: list[Decimal]
) -> dict[str, object]:
    """Store a new order in one transaction, then publish its task; the order as stored."""
    total = sum((p * q for p, q in zip(prices, quantities, strict=True)), Decimal("0.00"))
    order_id = uuid.uuid4()
    async with pool().acquire() as connection, connection.transaction():
        row = await connection.fetchrow(INSERT_ORDER, order_id, email, total)
        await connection.execute(INSERT_ITEMS, order_id, skus, quantities, prices)
    if resources.jetstream is None:
        msg = "the app has not started"
        raise RuntimeError(msg)
    task_id = uuid.uuid4().hex
    message = TASK_TEMPLATE.format(task=task_id, order=order_id).encode()
    await resources.jetstream.publish(resources.subject, message, headers={"Nats-Msg-Id": task_id})
    if row is None:  # INSERT ... RETURNING always returns its row
        msg = "the insert returned no row"
        raise RuntimeError(msg)
    created_at, updated_at, version = row
    return {
        "id": order_id,
        "customer_email": email,
        "status": "pending",
        "items": [
            {"sku": s, "quantity": q, "unit_price": p}
            for s, q, p in zip(skus, quantities, prices, strict=True)
        ],
        "total": total,
        "failure_reason": None,
        "created_at": created_at,
        "updated_at": updated_at,
        "version": version,
    }


async def create_order(request: Request) -> Response:
    try:
        email, skus, quantities, prices = parse_order(await request.body())
    except Invalid as error:
        return problem(422, str(error))
    return order_response(await insert_order(email, skus, quantities, prices), 201)


async def cancel(order_id: uuid.UUID) -> dict[str, object] | str | None:
    """Cancel a pending or processing order: the order as stored, else the status that
    forbids it, or None when there is no such order."""
    async with pool().acquire() as connection:
        rows = await connection.fetch(CANCEL, order_id)
        if rows:
            return orders_of(rows)[0]
        status: str | None = await connection.fetchval(STATUS_OF, order_id)
    return status


async def cancel_order(request: Request) -> Response:
    try:
        data: object = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return problem(422, "the body is no JSON")
    if data != {"status": "cancelled"}:
        return problem(422, 'only {"status": "cancelled"}')
    cancelled = await cancel(request.path_params["order_id"])
    if cancelled is None:
        return problem(404, "Order not found")
    if isinstance(cancelled, str):
        return problem(409, f"A {cancelled} order cannot be cancelled")
    return order_response(cancelled)


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    resources.subject = os.environ["BENCH_RAW_SUBJECT"]
    resources.pool = await asyncpg.create_pool(
        os.environ["BENCH_RAW_DSN"], min_size=POOL_SIZE, max_size=POOL_SIZE
    )
    resources.nats = await nats.connect(os.environ["BENCH_RAW_NATS_URL"], name="bench-raw-app")
    resources.jetstream = resources.nats.jetstream()
    try:
        yield
    finally:
        await resources.nats.close()
        await resources.pool.close()


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders", create_order, methods=["POST"]),
            Route("/orders/{order_id:uuid}", get_order, methods=["GET"]),
            Route("/orders/{order_id:uuid}/status", cancel_order, methods=["PATCH"]),
        ],
        lifespan=lifespan,
    )
