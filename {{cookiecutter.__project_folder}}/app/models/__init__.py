"""Every SQLAlchemy model, importable from one place: ``from app.models import Order``.

Alembic imports this package to see every table, so each new model module is imported here.
"""

from app.core.database import Base
from app.core.idempotency import IdempotencyRecord
from app.core.outbox import OutboxMessage
{% if cookiecutter.include_example %}
from app.models.order import Order, OrderItem, OrderStatus

__all__ = ["Base", "IdempotencyRecord", "Order", "OrderItem", "OrderStatus", "OutboxMessage"]
{% else %}

__all__ = ["Base", "IdempotencyRecord", "OutboxMessage"]
{% endif %}
