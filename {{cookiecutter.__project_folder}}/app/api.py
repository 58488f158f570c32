"""All versioned API routes; add each domain's router here."""

from fastapi import APIRouter
{% if cookiecutter.include_example %}

from app.orders.router import router as orders_router
{% endif %}

api_router = APIRouter(prefix="/api/v1")
{% if cookiecutter.include_example %}
api_router.include_router(orders_router)
{% endif %}
