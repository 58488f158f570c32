"""Dependencies of tasks, shared with the API through taskiq-fastapi."""

from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from taskiq import TaskiqDepends

from app.core.database import get_sessionmaker
from app.worker.dispatch import commit_and_dispatch, discard_pending


async def get_task_session(
    request: Annotated[Request, TaskiqDepends()],
) -> AsyncGenerator[AsyncSession]:
    """A task's unit of work: committed (then its follow-up tasks sent) when the task returns,
    rolled back when it raises."""
    async with get_sessionmaker(request)() as session:
        try:
            yield session
        except Exception:  # noqa: BLE001 - taskiq has recorded the task's error; re-raising
            # here would only log it twice.
            discard_pending(session)
            await session.rollback()
            return
        await commit_and_dispatch(session)


# Tasks declare it with a default, `session: AsyncSession = TaskSession`, so that the parameter
# stays out of the arguments a caller passes to `.kiq()` (an Annotated alias would not).
TaskSession: AsyncSession = TaskiqDepends(get_task_session)
