"""Per-request context that code outside the request handler needs (errors, logs, tasks)."""

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """Return the id of the request being served, or None outside a request."""
    return request_id_var.get()
