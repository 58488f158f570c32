"""How routes (and tasks) get the orders service."""

from typing import Annotated

from fastapi import Depends

from app.core.database import SessionDep
from app.orders.repository import OrderRepository
from app.orders.service import OrderService


def get_order_service(session: SessionDep) -> OrderService:
    """The service on the request's unit of work."""
    return OrderService(OrderRepository(session))


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
