"""The ``orders`` and ``order_items`` tables."""

import uuid
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Index, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.database import Base, Entity


class OrderStatus(StrEnum):
    """Where an order is in its life cycle (the moves it allows: ``app.orders.status``)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Order(Entity, Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index(None, "created_at", "id"),
        Index(None, "customer_email", "created_at", "id"),
        Index(None, "status", "created_at", "id"),
    )

    customer_email: Mapped[str] = mapped_column(String(320))
    # A checked string rather than a PostgreSQL enum: adding a status is a one-line migration.
    status: Mapped[OrderStatus] = mapped_column(
        Enum(
            OrderStatus,
            name="status",
            native_enum=False,
            length=16,
            create_constraint=True,
            values_callable=lambda statuses: [status.value for status in statuses],
        ),
        default=OrderStatus.PENDING,
    )
    total: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    # Incremented by SQLAlchemy on every UPDATE of the row (and checked in its WHERE clause):
    # the order's entity tag (ETag), which clients send back in If-Match.
    version: Mapped[int] = mapped_column(server_default=text("1"))

    __mapper_args__ = {  # noqa: RUF012 - read by SQLAlchemy, never mutated
        **Base.__mapper_args__,
        "version_id_col": version,
    }

    items: Mapped[list["OrderItem"]] = relationship(
        back_populates="order",
        cascade="all, delete-orphan",
        lazy="raise",
        order_by="OrderItem.position",
    )


class OrderItem(Base):
    __tablename__ = "order_items"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Numeric(8, 2))

    order: Mapped[Order] = relationship(back_populates="items", lazy="raise")
