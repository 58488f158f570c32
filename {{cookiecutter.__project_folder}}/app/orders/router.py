"""HTTP routes of orders: parse, call the service, shape the response."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.core.errors import error_responses
from app.core.openapi import header
from app.core.pagination import InvalidCursor, Page
from app.orders.dependencies import OrderServiceDep
from app.orders.exceptions import InvalidTransition, OrderNotFound
from app.orders.schemas import OrderCreate, OrderFilters, OrderRead, StatusChange

router = APIRouter(prefix="/orders", tags=["orders"])


def link(operation_id: str, description: str) -> dict[str, object]:
    """An OpenAPI link from a response holding an order to an operation on that order."""
    return {
        "operationId": operation_id,
        "parameters": {"order_id": "$response.body#/id"},
        "description": description,
    }


OrderId = Annotated[uuid.UUID, Path(description="The order's id (a UUID).")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an order",
    response_description="The order, as stored",
    responses={
        status.HTTP_201_CREATED: {
            "headers": {"Location": header("The URL of the new order.")},
            "links": {
                "GetOrder": link("get_order", "Read the order back."),
                "ChangeStatus": link("change_status", "Cancel the order."),
            },
        },
        **error_responses(validation=True),
    },
)
async def create_order(
    body: OrderCreate, service: OrderServiceDep, request: Request, response: Response
) -> OrderRead:
    """Record a new order; it starts as pending and is processed in the background."""
    order = await service.create(body)
    response.headers["Location"] = str(request.url_for("get_order", order_id=order.id).path)
    return OrderRead.model_validate(order)


@router.get(
    "",
    summary="List orders",
    responses=error_responses(InvalidCursor, validation=True),
)
async def list_orders(
    filters: Annotated[OrderFilters, Query()], service: OrderServiceDep
) -> Page[OrderRead]:
    """List orders oldest first, optionally by status or customer, one page at a time."""
    orders, next_cursor = await service.list_orders(filters)
    return Page[OrderRead](
        items=[OrderRead.model_validate(order) for order in orders], next_cursor=next_cursor
    )


@router.get(
    "/{order_id}",
    summary="Get an order",
    responses=error_responses(OrderNotFound, validation=True),
)
async def get_order(order_id: OrderId, service: OrderServiceDep) -> OrderRead:
    """Return one order with its items."""
    return OrderRead.model_validate(await service.get(order_id))


@router.patch(
    "/{order_id}/status",
    summary="Change an order's status",
    responses=error_responses(OrderNotFound, InvalidTransition, validation=True),
)
async def change_status(
    order_id: OrderId, body: StatusChange, service: OrderServiceDep
) -> OrderRead:
    """Move an order to a new status; only the moves its life cycle allows are accepted."""
    return OrderRead.model_validate(await service.change_status(order_id, body.status))
