"""The unit of work: one session that commits when its block ends, rolls back when it raises,
and publishes the tasks it wrote to the outbox once it has committed."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.outbox import Outbox
from app.core.state import app_state


async def get_outbox(request: Request) -> Outbox:
    """The outbox the lifespan put on the application's state."""
    return app_state(request, "outbox", Outbox)


class UnitOfWork:
    """How a route writes: ``async with UnitOfWork.of(request).begin() as session:`` around
    the work.

    The session commits when the block ends and rolls back when it raises; tasks asked for in
    it (``app.core.outbox.enqueue``) are saved with the data and published after the commit.
    Services and repositories never commit; they may flush. The commit comes before the route
    answers, so a failed commit is the client's error response, never a success followed by a
    silent rollback.

    A block in the route rather than a dependency: FastAPI runs a generator dependency's exit
    (``yield session``) in an exit stack under a shielded cancel scope, about 5% of a create's
    CPU, and solves every dependency node on every request, 2% more; this costs a context
    manager.
    """

    __slots__ = ("gate", "outbox", "sessionmaker")

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        gate: asyncio.Semaphore,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.gate = gate

    @classmethod
    def of(cls, request: Request) -> "UnitOfWork":
        """The request's way to write: ``async with UnitOfWork.of(request).begin() as s:``."""
        return cls(
            app_state(request, "sessionmaker", async_sessionmaker),
            app_state(request, "outbox", Outbox),
            app_state(request, "database_gate", asyncio.Semaphore),
        )

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: its session, committed when the block ends without an error."""
        async with self.gate, self.sessionmaker() as session:
            self.outbox.attach(session)
            try:
                yield session
            except BaseException:
                self.outbox.discard(session)
                await session.rollback()
                raise
            await self.outbox.commit(session)
