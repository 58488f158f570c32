"""How routes get the orders service."""

from typing import Annotated

from fastapi import Depends

from app.core.unit_of_work import SessionDep
from app.orders.service import OrderService
from app.orders.tasks import order_service


async def get_order_service(session: SessionDep) -> OrderService:
    """The service on the request's unit of work."""
    return order_service(session)


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
