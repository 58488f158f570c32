"""The transactional outbox: a task exists exactly when the data it works on does.

``enqueue(work, task.kicker(), ...)`` writes the task to the ``outbox`` table in the unit of
work ``work``. After the commit the process publishes it at once (the fast path), with
``Nats-Msg-Id`` set to the task id; the rows it published are deleted off the request path, many
in one statement (one DELETE per burst instead of a transaction per request). Whatever the fast
path missed (NATS
down, the process killed in between) the relay publishes later: every process that runs the
app's lifespan (API and workers) polls the table with ``FOR UPDATE SKIP LOCKED``, so any number
of them share the rows without publishing one twice at the same time. JetStream drops a copy
whose id it stored within the stream's duplicate window, so a row published twice (published,
then the process died before deleting it) still runs once.
"""

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg
import structlog
from sqlalchemy import (
    DateTime,
    Index,
    LargeBinary,
    String,
    Text,
    any_,
    bindparam,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from taskiq.kicker import AsyncKicker

from app.core.context import current_request_id
from app.core.database import Base, DriverStatement, Reader
from app.settings import OutboxSettings

log = structlog.get_logger(__name__)


def single_line(text_value: str, limit: int = 1000) -> str:
    """A value fit for a NATS header: one line, bounded."""
    return " ".join(text_value.split())[:limit]


class OutboxMessage(Base):
    """A task written with the business rows, waiting to be published."""

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "queue", "available_at"),)

    # The task id: also the NATS message id, so JetStream drops a second copy.
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The subject the task is published to; a process relays only its own queue's rows.
    queue: Mapped[str] = mapped_column(String(200))
    task_name: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )
    # The relay leaves a row alone until then (after a failed publish, with backoff).
    available_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )


# Core statements on the table, built once: cheaper than ORM objects and a flush, and the fast
# path needs nothing back from the row but what it wrote.
_TABLE = Base.metadata.tables[OutboxMessage.__tablename__]
_COLUMNS = ("id", "queue", "task_name", "body", "headers")
_INSERT = DriverStatement(insert(_TABLE), columns=_COLUMNS)
_INSERT_ONCE = DriverStatement(
    insert(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.id), columns=_COLUMNS
)
_DELETE_PUBLISHED = DriverStatement(
    delete(_TABLE).where(_TABLE.c.id == any_(bindparam("ids", type_=ARRAY(String))))
)


class Publishable(Protocol):
    """A task as the outbox publishes it: a row just written, or one the relay read."""

    @property
    def id(self) -> str: ...

    @property
    def task_name(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class PendingTask:
    """A task written by the unit of work, to publish once it commits."""

    id: str
    task_name: str
    body: bytes
    headers: dict[str, str]


class Publisher(Protocol):
    """What the outbox needs of the task queue (the broker)."""

    @property
    def queue(self) -> str:
        """The subject tasks are published to."""
        ...

    @property
    def is_connected(self) -> bool: ...

    async def publish(self, message_id: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish one task; returns once the queue stored it (or dropped it as a duplicate)."""
        ...


class Outbox:
    """The outbox of one process: publishes the tasks of committed units of work, deletes their
    rows, and relays what the fast path missed."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        settings: OutboxSettings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.publisher = publisher
        self.settings = settings
        self._wake = asyncio.Event()
        self._published: list[str] = []
        self._deleting: asyncio.Task[None] | None = None
        # The relay and the deletes take turns: the outbox's background work holds one
        # connection at most (a worker's concurrency counts on it: Settings.worker_connections).
        self._background = asyncio.Lock()

    async def publish_committed(self, rows: Sequence[PendingTask]) -> None:
        """Publish committed rows; the ones that made it are deleted in the background (see
        ``forget``), the others wait for the relay."""
        published, _ = await self._publish(rows, deferred_event="outbox.publish_deferred")
        if published:
            self.forget(published)

    def forget(self, task_ids: Sequence[str]) -> None:
        """Delete the rows of published tasks, soon and many at once.

        One background task deletes every id handed in while its previous DELETE ran, so under
        load a burst of requests costs one statement, and no request waits for it. Should the
        process die first, the relay publishes those rows again once they are
        ``relay_min_age`` old, and JetStream drops the copies (same ``Nats-Msg-Id``).
        """
        self._published.extend(task_ids)
        if self._deleting is None or self._deleting.done():
            self._deleting = asyncio.create_task(self._delete_published())

    async def _delete_published(self) -> None:
        while self._published:
            batch, self._published = self._published, []
            try:
                async with self._background, self._connection() as connection:
                    await connection.execute(
                        _DELETE_PUBLISHED.sql, *_DELETE_PUBLISHED.arguments(ids=batch)
                    )
            except Exception as exc:  # noqa: BLE001 - the relay publishes them again, deduplicated
                log.warning("outbox.delete_failed", count=len(batch), error=repr(exc))

    def _connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """asyncpg's connection from what the sessions are bound to, for one statement that
        commits on its own: one DELETE is a transaction, and an ORM session around it cost the
        process about as much CPU again (its connection, BEGIN, COMMIT and close)."""
        bind = self.sessionmaker.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            return Reader.on(bind).connection()
        if isinstance(bind, AsyncConnection):  # a test's transaction
            return Reader.within(bind).connection()
        msg = "the outbox's sessions are bound to no engine or connection"
        raise TypeError(msg)

    async def settle(self) -> None:
        """Wait until the rows of every task published so far are deleted (shutdown, tests)."""
        while self._deleting is not None and not self._deleting.done():
            await asyncio.shield(self._deleting)

    async def _publish(
        self, rows: Sequence[Publishable], *, deferred_event: str
    ) -> tuple[list[str], str | None]:
        """Publish rows in order until one fails: the ids that were published, and why the
        next one was not (None when all were)."""
        published: list[str] = []
        for row in rows:
            try:
                if not self.publisher.is_connected:
                    msg = "not connected to NATS"
                    raise ConnectionError(msg)
                await self.publisher.publish(row.id, row.body, row.headers)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the row stays for later
                log.warning(
                    deferred_event,
                    task_id=row.id,
                    task_name=row.task_name,
                    left=len(rows) - len(published),
                    error=repr(exc),
                )
                return published, single_line(repr(exc))
            published.append(row.id)
        return published, None

    def wake(self) -> None:
        """Make the relay look at the outbox now (NATS is back)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of rows the fast path missed; return how many were published."""
        settings = self.settings
        now = func.clock_timestamp()
        async with self._background, self.sessionmaker() as session:
            rows = list(
                await session.scalars(
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.queue == self.publisher.queue,
                        OutboxMessage.available_at <= now,
                        OutboxMessage.created_at <= now - timedelta(seconds=settings.relay_min_age),
                    )
                    .order_by(OutboxMessage.created_at)
                    .limit(settings.relay_batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            if not rows:
                return 0
            published, failure = await self._publish(rows, deferred_event="outbox.relay_failed")
            if published:
                await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(published)))
            if len(published) < len(rows):
                failed = rows[len(published)]
                failed.last_error = failure
                failed.attempts += 1
                delay = min(
                    settings.retry_delay * 2 ** (failed.attempts - 1), settings.retry_max_delay
                )
                failed.available_at = now + timedelta(seconds=delay)
            await session.commit()
        if published:
            log.info("outbox.relayed", count=len(published))
        return len(published)

    async def run_relay(self) -> None:
        """Relay until cancelled: every ``relay_interval`` seconds, and at once when woken."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.relay_interval):
                    await self._wake.wait()
            self._wake.clear()
            if not self.publisher.is_connected:
                continue
            try:
                while await self.relay_once() == self.settings.relay_batch_size:
                    pass
            except Exception as exc:  # noqa: BLE001 - a database blip; the next round retries
                log.warning("outbox.relay_error", error=repr(exc))


class InUnitOfWork(Protocol):
    """What ``enqueue`` needs of a unit of work (``app.core.unit_of_work.Work``, which
    publishes through the outbox once it commits)."""

    @property
    def outbox(self) -> "Outbox": ...

    @property
    def pending(self) -> list[PendingTask]:
        """The tasks written so far, to publish after the commit."""
        ...

    async def connection(self) -> asyncpg.Connection: ...


async def enqueue[**P, R](
    work: InUnitOfWork, kicker: AsyncKicker[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> str:
    """Write the task to the outbox in the unit of work ``work``; return its id.

    It is published after the commit, and never if the unit of work rolls back. A kicker with
    a fixed id (``.with_task_id(...)``) is written once while unpublished, and JetStream drops
    a second copy within its duplicate window: a way to ask for a task again without flooding.
    """
    if request_id := current_request_id():
        kicker = kicker.with_labels(request_id=request_id)
    fixed = kicker.custom_task_id is not None
    if not fixed:
        kicker = kicker.with_task_id(uuid.uuid4().hex)
    # taskiq 0.13 has no public way to build a message without sending it.
    message = kicker.broker.formatter.dumps(kicker._prepare_message(*args, **kwargs))
    task = PendingTask(
        id=message.task_id,
        task_name=message.task_name,
        body=message.message,
        headers={key: single_line(str(value)) for key, value in message.labels.items()},
    )
    values = {
        "id": task.id,
        "queue": work.outbox.publisher.queue,
        "task_name": task.task_name,
        "body": task.body,
        "headers": task.headers,
    }
    driver = await work.connection()
    if not fixed:
        await driver.execute(_INSERT.sql, *_INSERT.arguments(**values))
        work.pending.append(task)
        return task.id
    if await driver.fetchval(_INSERT_ONCE.sql, *_INSERT_ONCE.arguments(**values)) is not None:
        work.pending.append(task)
    return task.id
