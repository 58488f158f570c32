"""Settings of the orders example (``ORDERS_*``)."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORDERS_", env_file=".env", extra="ignore", frozen=True
    )

    # Orders still processing after this many seconds are failed by the sweep.
    processing_timeout: float = Field(default=900.0, gt=0)
    # Orders pending or processing for longer than this get their next task again from the
    # sweep, in case it was lost (fixed ids: at most one copy per NATS duplicate window).
    requeue_pending_after: float = Field(default=120.0, gt=0)
    # How often the scheduler runs the sweep, in seconds.
    sweep_interval: int = Field(default=60, ge=1)
    # Stand-in for real fulfilment work (a payment, a warehouse call), in seconds.
    fulfilment_seconds: float = Field(default=0.0, ge=0, le=600)


@lru_cache
def get_orders_settings() -> OrdersSettings:
    """The orders settings, read once from the environment."""
    return OrdersSettings()
