"""The scheduler: sends each task that declares a ``schedule`` label at its times.

Run two or more for availability (``just scheduler``): only the one that holds the schedule
lease sends, so each tick is sent once. The lease is a PostgreSQL advisory lock on a connection
of the scheduler's own: it is released when that connection ends, a killed scheduler's
included, and a standby takes it at its next tick.
"""

import asyncio
import hashlib

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from taskiq import ScheduleSource, TaskiqScheduler
from taskiq.abc.broker import AsyncBroker
from taskiq.schedule_sources import LabelScheduleSource
from taskiq.scheduler.scheduled_task import ScheduledTask

from app.core.database import create_engine
from app.core.logging import configure_logging
from app.settings import Settings, get_settings
from app.worker.broker import broker

log = structlog.get_logger(__name__)


def lease_key(queue_prefix: str) -> int:
    """The advisory lock of one service and environment: a stable signed 64-bit number."""
    digest = hashlib.sha256(f"{queue_prefix}:scheduler".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ScheduleLease:
    """Held by one scheduler at a time: a session-level advisory lock.

    ``held()`` tells whether this scheduler may send now: it keeps the lock while its
    connection answers, and tries to take it otherwise. A connection that fails gives the lease
    up (PostgreSQL releases the lock with the session), so a scheduler that lost the database
    stops sending rather than sending alongside the next holder.
    """

    def __init__(self, engine: AsyncEngine, key: int) -> None:
        self.engine = engine
        self.key = key
        self._connection: AsyncConnection | None = None
        self._holding = False
        # Tasks due at the same tick are sent concurrently: one check at a time, on one session.
        self._checking = asyncio.Lock()

    async def held(self) -> bool:
        async with self._checking:
            return await self._check()

    async def _check(self) -> bool:
        try:
            if self._connection is None:
                # Autocommit: the session holds the lock, never an open transaction.
                connection = await self.engine.connect()
                self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if self._holding:
                await self._connection.execute(text("SELECT 1"))
                return True
            taken = await self._connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            )
        except Exception as exc:  # noqa: BLE001 - whatever failed, this scheduler is no holder
            log.warning("schedule.lease_lost", error=repr(exc))
            await self.release()
            return False
        if taken:
            self._holding = True
            log.info("schedule.lease_taken")
        return self._holding

    async def release(self) -> None:
        """Give the lease up: end the session, which releases the lock.

        The connection is invalidated, not returned to the pool: a pooled session would keep
        holding the lock.
        """
        self._holding = False
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.invalidate()
                await connection.close()
            except Exception as exc:  # noqa: BLE001 - the session is gone either way
                log.warning("schedule.lease_close_failed", error=repr(exc))


class LeasedScheduler(TaskiqScheduler):
    """A scheduler that sends only while it holds the schedule lease."""

    def __init__(
        self, broker: AsyncBroker, sources: list[ScheduleSource], settings: Settings
    ) -> None:
        super().__init__(broker, sources)
        self.settings = settings
        self._engine: AsyncEngine | None = None
        self._lease: ScheduleLease | None = None

    async def startup(self) -> None:
        await super().startup()
        settings = self.settings
        # One connection: the lease's session.
        database = settings.database.model_copy(update={"pool_size": 1, "max_overflow": 0})
        self._engine = create_engine(
            database, application_name=f"{settings.service_name}-scheduler"
        )
        self._lease = ScheduleLease(self._engine, lease_key(settings.queue_prefix))

    async def on_ready(self, source: ScheduleSource, task: ScheduledTask) -> None:
        if self._lease is None or not await self._lease.held():
            log.debug("schedule.standby", task_name=task.task_name, schedule_id=task.schedule_id)
            return
        await super().on_ready(source, task)
        log.info("schedule.sent", task_name=task.task_name, schedule_id=task.schedule_id)

    async def shutdown(self) -> None:
        if self._lease is not None:
            await self._lease.release()
        if self._engine is not None:
            await self._engine.dispose()
        await super().shutdown()


# The worker's logging is set up by the app's lifespan; the scheduler runs no app, so here.
_settings = get_settings()
configure_logging(_settings)

scheduler = LeasedScheduler(broker, [LabelScheduleSource(broker)], _settings)
