"""The unit of work: one session that commits on success, rolls back on error, and publishes
the tasks it wrote to the outbox once it has committed."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import get_gate, get_sessionmaker
from app.core.outbox import Outbox
from app.core.state import app_state


async def get_outbox(request: Request) -> Outbox:
    """The outbox the lifespan put on the application's state."""
    return app_state(request, "outbox", Outbox)


async def get_session(
    factory: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
    outbox: Annotated[Outbox, Depends(get_outbox)],
    gate: Annotated[asyncio.Semaphore, Depends(get_gate)],
) -> AsyncIterator[AsyncSession]:
    """The unit of work of one request: commit when the handler succeeds, roll back when it
    raises. Services and repositories never commit; they may flush. Tasks they asked for
    (``app.core.outbox.enqueue``) are saved with the data and published after the commit."""
    async with gate, factory() as session:
        outbox.attach(session)
        try:
            yield session
        except BaseException:
            outbox.discard(session)
            await session.rollback()
            raise
        await outbox.commit(session)


# scope="function": the commit runs before the response is sent, so a failed commit is the
# client's error response, never a success followed by a silent rollback.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
