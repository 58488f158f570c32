"""HTTP routes of orders: parse, call the service, shape the response."""

import uuid
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from starlette.applications import Starlette

from app.core.conditional import IfMatch, PreconditionFailed
from app.core.database import Reader
from app.core.database_errors import DATABASE_ERRORS, DATABASE_READ_ERRORS
from app.core.errors import error_responses
from app.core.idempotency import IDEMPOTENCY_KEY_PARAMETER, Idempotency, IdempotencyKeyReused
from app.core.openapi import header
from app.core.pagination import Page
from app.core.parameters import PathParameter
from app.core.unit_of_work import UnitOfWork
from app.orders.exceptions import InvalidTransition, OrderNotFound
from app.orders.queries import OrderQueries
from app.orders.schemas import OrderCreate, OrderFilters, OrderRead, StatusChange
from app.orders.tasks import order_service

router = APIRouter(prefix="/orders", tags=["orders"])

# Read off the request in the route (``ORDER_ID.of(request)``), not declared as a parameter:
# FastAPI's work for a declared path parameter cost a GET about 7% of its CPU.
ORDER_ID = PathParameter("order_id", uuid.UUID, description="The order's id (a UUID).")

IfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description=(
            "The ETag of the order as last read (or `*`, or a list of tags): the change is "
            "made only if the order is unchanged since (412 otherwise, also when the field is "
            "no list of tags). Without it the change is made whatever changed meanwhile."
        ),
    ),
]
ORDER_HEADERS = {
    "ETag": header("The order's version, for `If-Match` and `If-None-Match`.", example='"1"'),
    "Content-Location": header("The URL of the order.", example="/api/v1/orders/{order_id}"),
}


def link(operation_id: str, description: str) -> dict[str, object]:
    """An OpenAPI link from a response holding an order to an operation on that order."""
    return {
        "operationId": operation_id,
        "parameters": {"order_id": "$response.body#/id"},
        "description": description,
    }


@lru_cache(maxsize=16)
def _order_path_template(app: Starlette) -> str:
    # Looking a route up walks every route: once per application is enough.
    return app.url_path_for("get_order", order_id=_PLACEHOLDER)


_PLACEHOLDER = uuid.UUID(int=0)
_PLACEHOLDER_TEXT = str(_PLACEHOLDER)


def order_path(request: Request, order_id: uuid.UUID) -> str:
    """The path of an order, as the application serves it."""
    return _order_path_template(request.app).replace(_PLACEHOLDER_TEXT, str(order_id))


def order_response(
    order: OrderRead, etag: str, request: Request, *, status_code: int = status.HTTP_200_OK
) -> Response:
    """The order as JSON with its ETag (the validator clients send back in If-Match)."""
    return Response(
        order.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={
            "ETag": etag,
            # The body is the order's representation, whichever route returned it.
            "Content-Location": order_path(request, order.id),
        },
    )


# The most requested route first: FastAPI tries routes in the order they are declared, and each
# one tried before the one that answers costs a read about 3% of its CPU.
@router.get(
    "/{order_id}",  # noqa: FAST003 - read off the request: ORDER_ID.of(request)
    response_model=OrderRead,
    summary="Get an order",
    response_description="The order",
    responses={
        status.HTTP_200_OK: {"headers": ORDER_HEADERS},
        **error_responses(OrderNotFound, *DATABASE_READ_ERRORS, validation=True),
    },
    openapi_extra={"parameters": [ORDER_ID.openapi]},
)
async def get_order(request: Request) -> Response:
    """Return one order with its items, and its ETag (``If-None-Match`` with a current tag
    gets 304: ``NotModifiedMiddleware``)."""
    order_id = ORDER_ID.of(request)
    view = await OrderQueries(Reader.of(request)).get(order_id)
    if view is None:
        raise OrderNotFound(order_id)
    return order_response(view.order, view.etag, request)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    summary="Create an order",
    response_description="The order, as stored (or as first stored, for a repeated key)",
    responses={
        status.HTTP_201_CREATED: {
            "headers": {
                "Location": header("The URL of the new order."),
                **ORDER_HEADERS,
                "Idempotent-Replayed": header(
                    "`true` when this is the stored answer to an earlier request with the "
                    "same `Idempotency-Key` and body.",
                    example="true",
                ),
            },
            "links": {
                "GetOrder": link("get_order", "Read the order back."),
                "ChangeStatus": link("change_status", "Cancel the order."),
            },
        },
        **error_responses(IdempotencyKeyReused, *DATABASE_ERRORS, validation=True),
    },
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER]},
)
async def create_order(body: OrderCreate, request: Request) -> Response:
    """Record a new order; it starts as pending and is processed in the background."""
    idempotency = Idempotency.of(request)
    async with UnitOfWork.of(request).begin() as work:
        if (replayed := await idempotency.replay(work, body)) is not None:
            return replayed
        created = await order_service(work).create(body)
        response = order_response(
            created.order, created.etag, request, status_code=status.HTTP_201_CREATED
        )
        response.headers["Location"] = response.headers["Content-Location"]
        await idempotency.remember(work, response)
    return response


@router.get(
    "",
    response_model=Page[OrderRead],
    summary="List orders",
    responses=error_responses(*DATABASE_READ_ERRORS, validation=True),
)
async def list_orders(filters: Annotated[OrderFilters, Query()], request: Request) -> Response:
    """List orders oldest first, optionally by status or customer, one page at a time."""
    orders, next_cursor = await OrderQueries(Reader.of(request)).page(filters)
    page = Page[OrderRead](items=orders, next_cursor=next_cursor)
    return Response(page.model_dump_json(), media_type="application/json")


@router.patch(
    "/{order_id}/status",  # noqa: FAST003 - read off the request: ORDER_ID.of(request)
    response_model=OrderRead,
    summary="Cancel an order",
    response_description="The order, cancelled",
    responses={
        status.HTTP_200_OK: {"headers": ORDER_HEADERS},
        **error_responses(
            OrderNotFound,
            InvalidTransition,
            PreconditionFailed,
            *DATABASE_ERRORS,
            validation=True,
        ),
    },
    openapi_extra={"parameters": [ORDER_ID.openapi]},
)
async def change_status(
    body: StatusChange,  # noqa: ARG001 - validated only: "cancelled" is its one value
    request: Request,
    if_match: IfMatchHeader = None,
) -> Response:
    """Cancel a pending or processing order (the only status a client may set); 409 otherwise."""
    order_id = ORDER_ID.of(request)
    condition = IfMatch.parse(if_match) if if_match is not None else None
    async with UnitOfWork.of(request).begin() as work:
        view = await order_service(work).cancel(order_id, if_match=condition)
    return order_response(view.order, view.etag, request)
