"""Dependencies of tasks, shared with the API through taskiq-fastapi."""

from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import Request
from taskiq import TaskiqDepends

from app.core.database import get_sessionmaker
from app.core.unit_of_work import Work, get_outbox


async def get_task_work(
    request: Annotated[Request, TaskiqDepends()],
) -> AsyncGenerator[Work]:
    """A task's unit of work, with an ORM session (``work.session``): committed (then the
    tasks it wrote published) when the task returns, rolled back when it raises.

    taskiq closes this dependency after the task, outside its own error handling: a commit that
    fails here escapes it. The broker settles such a delivery as a failure all the same (retry
    with backoff, then the dead letters): see ``app.worker.delivery``.
    """
    outbox = await get_outbox(request)
    factory = await get_sessionmaker(request)
    async with factory() as session:
        work = Work(session=session, outbox=outbox)
        try:
            yield work
        except Exception:  # noqa: BLE001 - taskiq has recorded the task's error; re-raising
            # here would only escape taskiq's handling a second time.
            await session.rollback()
            return
        await session.commit()
    await work.published()


# Tasks declare it with a default, `work: Work = TaskWork`, so that the parameter stays out of
# the arguments a caller passes to `.kiq()` (an Annotated alias would not).
TaskWork: Work = TaskiqDepends(get_task_work)
