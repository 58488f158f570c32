"""The unit of work: one transaction that commits when its block ends, rolls back when it
raises, and publishes the tasks it wrote to the outbox once it has committed.

A request's unit of work runs on asyncpg's own connection (``DriverStatement``s); a task's, and
a request's that asks for it (``begin(orm=True)``), also has a SQLAlchemy ``AsyncSession`` for
the ORM. Both are a ``Work``: repositories, services and ``enqueue`` take it whichever it is.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import Reader, driver_connection
from app.core.outbox import Outbox, PendingTask
from app.core.state import app_state


async def get_outbox(request: Request) -> Outbox:
    """The outbox the lifespan put on the application's state."""
    return app_state(request, "outbox", Outbox)


class Work:
    """One unit of work as the code inside it sees it: the driver's connection inside its
    transaction (``await work.connection()``, for ``DriverStatement``s), the ORM session when it
    has one (``work.session``), and the tasks it asked for (``enqueue(work, ...)``), published
    once it commits.
    """

    __slots__ = ("_connection", "_outbox", "_session", "pending")

    def __init__(
        self,
        *,
        connection: asyncpg.Connection | None = None,
        session: AsyncSession | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        # ``outbox``: where its tasks go; without one (a test's), ``enqueue`` refuses.
        if (connection is None) == (session is None):
            msg = "a unit of work runs on a driver connection or on a session"
            raise TypeError(msg)
        self._outbox = outbox
        self.pending: list[PendingTask] = []
        self._connection = connection
        self._session = session

    async def connection(self) -> asyncpg.Connection:
        """asyncpg's connection, inside this unit of work's transaction."""
        if self._connection is None:
            # A session's: begun on first use, kept for the rest of its transaction.
            return await driver_connection(self.session)
        return self._connection

    @property
    def session(self) -> AsyncSession:
        """The ORM session of a unit of work begun with one (a task's, ``begin(orm=True)``)."""
        if self._session is None:
            msg = (
                "this unit of work runs on the driver's connection only (DriverStatements); "
                "begin it with UnitOfWork.of(request).begin(orm=True) to use the ORM"
            )
            raise TypeError(msg)
        return self._session

    @property
    def outbox(self) -> Outbox:
        """The outbox its tasks are written to and published through."""
        if self._outbox is None:
            msg = "this unit of work has no outbox (use UnitOfWork.begin or TaskWork)"
            raise TypeError(msg)
        return self._outbox

    async def published(self) -> None:
        """After the commit: publish the tasks it wrote (the outbox's fast path)."""
        if self.pending:
            await self.outbox.publish_committed(self.pending)


class UnitOfWork:
    """How a route writes: ``async with UnitOfWork.of(request).begin() as work:`` around the
    work.

    The transaction commits when the block ends and rolls back when it raises; tasks asked for
    in it (``app.core.outbox.enqueue``) are saved with the data and published after the commit.
    Services and repositories never commit. The commit comes before the route answers, so a
    failed commit is the client's error response, never a success followed by a silent
    rollback.

    ``begin()`` is a transaction on asyncpg's connection, leased from the engine's pool through
    the gate like a read's, with no ORM session: a session's own work (its connection, commit
    and close, each through a greenlet) cost a unit of work as much CPU again as asyncpg's
    BEGIN, statement and COMMIT (measured: 700 µs against 350 µs). ``begin(orm=True)`` is one
    with an ``AsyncSession`` too, for a change that wants the ORM (a task's unit of work is one).

    A block in the route rather than a dependency: FastAPI runs a generator dependency's exit
    in an exit stack under a shielded cancel scope, about 5% of a create's CPU, and solves every
    dependency node on every request, 2% more; this costs a context manager.
    """

    __slots__ = ("gate", "outbox", "reader", "sessionmaker")

    def __init__(
        self,
        reader: Reader,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        gate: asyncio.Semaphore,
    ) -> None:
        self.reader = reader
        self.sessionmaker = sessionmaker
        self.outbox = outbox
        self.gate = gate

    @classmethod
    def of(cls, request: Request) -> "UnitOfWork":
        """The request's way to write: ``async with UnitOfWork.of(request).begin() as w:``."""
        return cls(
            app_state(request, "reader", Reader),
            app_state(request, "sessionmaker", async_sessionmaker),
            app_state(request, "outbox", Outbox),
            app_state(request, "database_gate", asyncio.Semaphore),
        )

    @asynccontextmanager
    async def begin(self, *, orm: bool = False) -> AsyncIterator[Work]:
        """One unit of work, committed when the block ends without an error."""
        if orm:
            async with self._with_session() as work:
                yield work
        else:
            async with self.reader.connection() as connection:
                work = Work(connection=connection, outbox=self.outbox)
                # Rolled back when the block raises; its connection is back in the pool (or
                # taken out of it, when the transaction could not end) before the publish.
                async with connection.transaction():
                    yield work
        await work.published()

    @asynccontextmanager
    async def _with_session(self) -> AsyncIterator[Work]:
        async with self.gate, self.sessionmaker() as session:
            work = Work(session=session, outbox=self.outbox)
            try:
                yield work
            except BaseException:
                await session.rollback()
                raise
            await session.commit()
