"""Worker-side context: every log line of a task carries its id, its name and the ids it carries."""

import time
from contextvars import ContextVar
from typing import Any

import structlog
from taskiq import TaskiqMessage, TaskiqMiddleware
from taskiq.result import TaskiqResult

from app.core.context import request_id_var

log = structlog.get_logger(__name__)

# The fields every task line carries already; a label of the same name never replaces them.
OWN_FIELDS = frozenset({"task_id", "task_name"})

_started_at: ContextVar[float | None] = ContextVar("task_started_at", default=None)


def context_labels(labels: dict[str, Any]) -> dict[str, str]:
    """The labels that become log context: every id a task carries (``request_id``, and the ids
    a domain adds with ``kicker.with_labels(<thing>_id=...)``).

    ``labels`` is ``Any``-valued: taskiq keeps whatever the producer put there.
    """
    return {
        name: str(value)
        for name, value in labels.items()
        if name.endswith("_id") and name.isidentifier() and name not in OWN_FIELDS
    }


class TaskContextMiddleware(TaskiqMiddleware):
    """Binds the task's labels to the log context and logs its start and outcome."""

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        # Each task runs in its own asyncio task, so these bindings stay with it.
        context = context_labels(message.labels)
        structlog.contextvars.bind_contextvars(
            task_id=message.task_id, task_name=message.task_name, **context
        )
        request_id_var.set(context.get("request_id"))
        _started_at.set(time.monotonic())
        log.info("task.started")
        return message

    def post_execute(
        self,
        message: TaskiqMessage,  # noqa: ARG002 - the hook's signature
        result: TaskiqResult[Any],  # Any: every task's result passes through here
    ) -> None:
        elapsed = time.monotonic() - (_started_at.get() or time.monotonic())
        if result.is_err:
            log.warning(
                "task.failed", error=repr(result.error), duration_ms=round(elapsed * 1000, 2)
            )
        else:
            log.info("task.finished", duration_ms=round(elapsed * 1000, 2))
