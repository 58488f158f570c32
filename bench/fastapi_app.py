"""Plain FastAPI on the raw app's database access: what FastAPI itself costs, for scale.

``api_bench.py --fastapi`` starts it as a third app beside the project's API and
``raw_app.py``. It runs the raw app's SQL on the raw app's asyncpg pool and publishes the same
task, but is written the way FastAPI's tutorial writes an API: typed path and query
parameters, pydantic models for the bodies (with the example's limits) and for the responses
(``response_model``, FastAPI validates and serializes what a route returns), ``HTTPException``
for errors. No middleware, dependencies, logging, unit of work or outbox.

So ``raw_app.py`` to this app is FastAPI's own share (routing, parameter and body validation,
response serialization), and this app to the project is the share of the project's layers.

Configured like ``raw_app.py`` (``BENCH_RAW_DSN``, ``BENCH_RAW_NATS_URL``,
``BENCH_RAW_SUBJECT``). Run with ``uvicorn --factory fastapi_app:create_app --app-dir
<template>/bench``.
"""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

# isort: off
# (Whether this is first-party depends on which project's linter looks at this file.)
import raw_app

# isort: on


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    quantity: int = Field(ge=1, le=10_000)
    unit_price: Decimal = Field(ge=0, max_digits=8, decimal_places=2)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    items: list[ItemIn] = Field(min_length=1, max_length=100)


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["cancelled"]


class ItemOut(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal


class OrderOut(BaseModel):
    id: uuid.UUID
    customer_email: str
    status: str
    items: list[ItemOut]
    total: Decimal
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class PageOut(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


router = APIRouter()


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: uuid.UUID, response: Response) -> dict[str, object]:
    order = await raw_app.order_by_id(order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Order not found")
    response.headers.update(raw_app.order_headers(order))
    return order


@router.get("/orders", response_model=PageOut)
async def list_orders(
    limit: Annotated[int, Query(ge=1, le=raw_app.MAX_LIMIT)] = raw_app.DEFAULT_LIMIT,
) -> dict[str, object]:
    return await raw_app.first_page(limit)


@router.post("/orders", response_model=OrderOut, status_code=status.HTTP_201_CREATED)
async def create_order(body: OrderIn, response: Response) -> dict[str, object]:
    order = await raw_app.insert_order(
        raw_app.normalized(body.customer_email),
        [item.sku for item in body.items],
        [item.quantity for item in body.items],
        [item.unit_price for item in body.items],
    )
    response.headers.update(raw_app.order_headers(order, created=True))
    return order


@router.patch("/orders/{order_id}/status", response_model=OrderOut)
async def cancel_order(
    order_id: uuid.UUID,
    body: StatusIn,  # noqa: ARG001 - validated only: "cancelled" is its one value
    response: Response,
) -> dict[str, object]:
    cancelled = await raw_app.cancel(order_id)
    if cancelled is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Order not found")
    if isinstance(cancelled, str):
        detail = f"A {cancelled} order cannot be cancelled"
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    response.headers.update(raw_app.order_headers(cancelled))
    return cancelled


def create_app() -> FastAPI:
    app = FastAPI(lifespan=raw_app.lifespan)
    app.include_router(router)
    return app
