"""Tasks asked for during a unit of work are sent only after it commits.

A service calls ``send_after_commit(session, task.kicker(), ...)``; nothing reaches NATS until
the session's unit of work commits, and a rollback drops the tasks. When NATS is unreachable the
unit of work is refused (503) before it commits, so an accepted request never silently loses its
task. If publishing fails in the moment after the commit, the error is logged and the domain's
periodic sweep sends the task again (the tasks are idempotent).
"""

from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from taskiq.kicker import AsyncKicker

from app.core.context import current_request_id
from app.core.errors import ServiceUnavailable
from app.worker.broker import broker

log = structlog.get_logger(__name__)

PENDING_TASKS = "pending_tasks"

Send = Callable[[], Awaitable[object]]


class QueueUnavailable(ServiceUnavailable):
    code = "queue_unavailable"
    title = "Task queue unavailable"


def send_after_commit[**P, R](
    session: AsyncSession, kicker: AsyncKicker[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> None:
    """Send the task once ``session``'s unit of work has committed; never if it rolls back."""
    if request_id := current_request_id():
        kicker = kicker.with_labels(request_id=request_id)

    async def send() -> object:
        return await kicker.kiq(*args, **kwargs)

    pending: list[Send] = session.info.setdefault(PENDING_TASKS, [])
    pending.append(send)


def discard_pending(session: AsyncSession) -> None:
    """Forget the tasks of a unit of work that rolled back."""
    session.info.pop(PENDING_TASKS, None)


async def commit_and_dispatch(session: AsyncSession) -> None:
    """Commit the unit of work, then send the tasks it asked for."""
    pending: list[Send] = session.info.pop(PENDING_TASKS, [])
    if pending and not broker.is_connected:
        msg = "The task queue cannot be reached; nothing was saved. Try again shortly."
        raise QueueUnavailable(msg)
    await session.commit()
    for send in pending:
        try:
            await send()
        except Exception:
            log.exception("task.dispatch_failed")
