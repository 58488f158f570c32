"""The transactional outbox: a task is saved with the data of its unit of work, published after
the commit, and published later by the relay whatever stopped the fast path."""

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery
from fastapi import FastAPI, Request
from httpx import AsyncClient
from nats.js.errors import NotFoundError
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from structlog.types import EventDict

from app.core.database import Reader
from app.core.errors import Conflict
from app.core.outbox import _DELETE_PUBLISHED, Outbox, OutboxMessage, enqueue
from app.core.unit_of_work import UnitOfWork, Work
from app.main import create_app
from app.settings import OutboxSettings, Settings
from app.worker.broker import MESSAGE_ID, JetStreamBroker, broker
from devtools.embedded import free_port
from tests.helpers import lifespan_client
from tests.processes import wait_for
from tests.worker import sample_tasks


def add_probe_route(app: FastAPI, trace: Path) -> None:
    """A route that writes a row, asks for a task, then succeeds or fails."""

    @app.post("/outbox/{outcome}")
    async def write_and_queue(outcome: str, request: Request) -> dict[str, str]:
        async with UnitOfWork.of(request).begin() as work:
            driver = await work.connection()
            await driver.execute("INSERT INTO outbox_probe (note) VALUES ($1)", outcome)
            task_id = await enqueue(work, sample_tasks.record.kicker(), str(trace), outcome)
            if outcome == "refused":
                raise Conflict("refused after asking for a task")
            return {"task_id": task_id}


@pytest.fixture
async def probe_table(session: AsyncSession) -> None:
    await session.execute(text("CREATE TABLE outbox_probe (note text NOT NULL)"))


@pytest.fixture
def app(app: FastAPI, probe_table: None, tmp_path: Path) -> FastAPI:  # noqa: ARG001 - needs the table
    add_probe_route(app, tmp_path / "trace.txt")
    return app


@pytest.fixture
async def queue(client: AsyncClient) -> JetStreamBroker:  # noqa: ARG001 - its app connects it
    """The broker the client's app connected to the run's queue, emptied first."""
    await broker.jetstream.purge_stream(broker.config.stream)
    return broker


async def queued(queue: JetStreamBroker) -> int:
    info = await queue.jetstream.stream_info(queue.config.stream)
    return int(info.state.messages)


async def count(session: AsyncSession, table: str) -> int:
    return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)  # noqa: S608 - fixed names


async def outbox_rows(session: AsyncSession, queue: str) -> list[OutboxMessage]:
    """The outbox rows of ``queue``: the test's own, whatever other tests on this database left
    for their relays."""
    found = select(OutboxMessage).where(OutboxMessage.queue == queue)
    return list(await session.scalars(found.order_by(OutboxMessage.created_at)))


def relay_now(sessionmaker: async_sessionmaker[AsyncSession], publisher: JetStreamBroker) -> Outbox:
    """An outbox whose relay takes rows at once (no grace for a fast path)."""
    return Outbox(sessionmaker, publisher, OutboxSettings(relay_min_age=0, retry_delay=30))


async def test_task_is_published_after_the_commit_under_its_id(
    app: FastAPI,
    client: AsyncClient,
    queue: JetStreamBroker,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    outbox = app.state.outbox
    assert isinstance(outbox, Outbox)
    # Its background deletes run in the test's transaction too, where the row is visible.
    outbox.sessionmaker = sessionmaker
    response = await client.post("/outbox/ok", headers={"X-Request-ID": "req-7"})
    # Deleted off the request path: wait for it before the test uses the connection again.
    await outbox.settle()

    assert response.status_code == 200
    assert await count(session, "outbox_probe") == 1
    assert await queued(queue) == 1
    stored = await queue.jetstream.get_last_msg(queue.config.stream, queue.config.subject)
    headers = stored.headers or {}
    assert headers["request_id"] == "req-7"
    assert headers[MESSAGE_ID] == response.json()["task_id"]
    assert json.loads(stored.data or b"{}")["task_id"] == response.json()["task_id"]
    assert await outbox_rows(session, queue.queue) == [], "a published task leaves the outbox"


async def test_rolled_back_request_saves_and_sends_nothing(
    client: AsyncClient, queue: JetStreamBroker, session: AsyncSession
) -> None:
    response = await client.post("/outbox/refused")

    assert response.status_code == 409
    assert await queued(queue) == 0
    assert await count(session, "outbox_probe") == 0
    assert await outbox_rows(session, queue.queue) == []


@pytest.mark.slow
@pytest.mark.usefixtures("probe_table")
async def test_nats_down_accepts_the_write_and_keeps_the_task_for_the_relay(
    *,
    connection: AsyncConnection,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    fresh_queue: Settings,
    publisher: JetStreamBroker,
    tmp_path: Path,
) -> None:
    offline = fresh_queue.model_copy(
        update={
            "nats": fresh_queue.nats.model_copy(update={"url": f"nats://127.0.0.1:{free_port()}"})
        }
    )
    app = create_app(offline)
    add_probe_route(app, tmp_path / "trace.txt")
    async with lifespan_client(app) as client:
        app.state.sessionmaker = sessionmaker
        app.state.reader = Reader.within(connection)
        response = await client.post("/outbox/ok")
    assert response.status_code == 200
    [row] = await outbox_rows(session, publisher.queue)
    assert row.id == response.json()["task_id"]
    assert row.queue == publisher.queue
    assert await count(session, "outbox_probe") == 1

    # NATS is back (here: the publisher of the same queue); the relay publishes the task.
    assert await relay_now(sessionmaker, publisher).relay_once() == 1

    assert await queued(publisher) == 1
    stored = await publisher.jetstream.get_last_msg(
        publisher.config.stream, publisher.config.subject
    )
    assert (stored.headers or {})[MESSAGE_ID] == row.id
    assert await outbox_rows(session, publisher.queue) == []


async def test_relay_leaves_young_rows_to_the_fast_path(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: JetStreamBroker,
    tmp_path: Path,
) -> None:
    young = Outbox(sessionmaker, publisher, OutboxSettings(relay_min_age=60))
    work = Work(session=session, outbox=young)
    await enqueue(work, sample_tasks.record.kicker(), str(tmp_path), "young")
    await session.flush()

    assert await young.relay_once() == 0
    assert len(await outbox_rows(session, publisher.queue)) == 1


class FailingPublisher:
    """A queue that refuses every task, as NATS does when it is unreachable."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.is_connected = True
        self.calls = 0

    async def publish(self, message_id: str, body: bytes, headers: Mapping[str, str]) -> None:  # noqa: ARG002 - the protocol's signature
        self.calls += 1
        msg = "nats: timeout"
        raise TimeoutError(msg)


async def test_failed_relay_publish_backs_off_and_keeps_the_row(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: JetStreamBroker,
    tmp_path: Path,
) -> None:
    writer = relay_now(sessionmaker, publisher)
    work = Work(session=session, outbox=writer)
    for note in ("first", "second"):
        await enqueue(work, sample_tasks.record.kicker(), str(tmp_path), note)
    await session.flush()
    failing = FailingPublisher(publisher.queue)
    relay = Outbox(sessionmaker, failing, OutboxSettings(relay_min_age=0, retry_delay=30))

    assert await relay.relay_once() == 0
    assert failing.calls == 1, "a failed publish ends the round"
    assert await relay.relay_once() == 0
    assert await relay.relay_once() == 0
    assert failing.calls == 2, "each failed row waits for its backoff"

    rows = await outbox_rows(session, publisher.queue)
    for row in rows:
        await session.refresh(row)
    assert [row.attempts for row in rows] == [1, 1]
    assert all("timeout" in (row.last_error or "") for row in rows)
    backed_off = OutboxMessage.available_at > func.now() + text("interval '20 seconds'")
    mine = OutboxMessage.queue == publisher.queue
    assert await session.scalar(select(func.bool_and(backed_off)).where(mine))


async def test_a_fixed_task_id_is_saved_once_and_published_once(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: JetStreamBroker,
    tmp_path: Path,
) -> None:
    outbox = relay_now(sessionmaker, publisher)
    kicker = sample_tasks.record.kicker().with_task_id("again:probe")
    for _ in range(2):
        work = Work(session=session, outbox=outbox)
        await enqueue(work, kicker, str(tmp_path), "again")
        await session.flush()
    assert len(await outbox_rows(session, publisher.queue)) == 1

    assert await outbox.relay_once() == 1
    # Asked again after it was published: saved and published again, dropped by JetStream.
    work = Work(session=session, outbox=outbox)
    await enqueue(work, kicker, str(tmp_path), "again")
    await session.flush()
    assert await outbox.relay_once() == 1

    assert await queued(publisher) == 1


async def test_published_rows_handed_in_together_are_deleted_by_one_statement(
    connection: AsyncConnection,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: JetStreamBroker,
    tmp_path: Path,
) -> None:
    outbox = relay_now(sessionmaker, publisher)
    work = Work(session=session, outbox=outbox)
    ids = [
        await enqueue(work, sample_tasks.record.kicker(), str(tmp_path), str(note))
        for note in range(3)
    ]
    await session.commit()
    statements: list[str] = []

    def record(query: LoggedQuery) -> None:
        statements.append(query.query)

    driver = (await connection.get_raw_connection()).driver_connection
    assert isinstance(driver, asyncpg.Connection)
    driver.add_query_logger(record)
    try:
        # Three requests publish before the deleting task gets to run: one DELETE for all.
        for task_id in ids:
            outbox.forget([task_id])
        await outbox.settle()
    finally:
        driver.remove_query_logger(record)

    assert await outbox_rows(session, publisher.queue) == []
    assert [s for s in statements if s.lstrip().upper().startswith("DELETE")] == [
        _DELETE_PUBLISHED.sql
    ]


async def test_a_failed_delete_leaves_the_rows_to_the_relay(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: JetStreamBroker,
    tmp_path: Path,
    log_events: list[EventDict],
) -> None:
    writer = relay_now(sessionmaker, publisher)
    work = Work(session=session, outbox=writer)
    task_id = await enqueue(work, sample_tasks.record.kicker(), str(tmp_path), "kept")
    await session.commit()
    unreachable = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    cut_off = Outbox(async_sessionmaker(unreachable), publisher, OutboxSettings(relay_min_age=0))

    cut_off.forget([task_id])
    await cut_off.settle()
    await unreachable.dispose()

    assert "outbox.delete_failed" in [event["event"] for event in log_events]
    [row] = await outbox_rows(session, publisher.queue)
    assert row.id == task_id
    assert await writer.relay_once() == 1, "the relay publishes it again (JetStream dedups)"
    assert await outbox_rows(session, publisher.queue) == []


class HeldPublisher:
    """A queue whose publish waits until the test lets it go."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.is_connected = True
        self.publishing = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, message_id: str, body: bytes, headers: Mapping[str, str]) -> None:  # noqa: ARG002 - the protocol's signature
        self.publishing.set()
        await self.release.wait()


async def test_the_relay_and_the_deletes_take_turns_on_one_connection(
    database_url: str, publisher: JetStreamBroker, tmp_path: Path
) -> None:
    # One connection and no patience: a delete that wanted a second connection would fail.
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    held = HeldPublisher(f"{publisher.queue}.held")
    outbox = Outbox(sessionmaker, held, OutboxSettings(relay_min_age=0))
    mine: list[str] = []
    try:
        async with sessionmaker() as session:
            work = Work(session=session, outbox=outbox)
            relayed = await enqueue(work, sample_tasks.record.kicker(), str(tmp_path), "r")
            published = await enqueue(work, sample_tasks.record.kicker(), str(tmp_path), "p")
            mine += [relayed, published]
            await session.execute(delete(OutboxMessage).where(OutboxMessage.id == published))
            # Published by another process's fast path: not the relay's (another queue).
            session.add(
                OutboxMessage(id=published, queue="elsewhere", task_name="t", body=b"", headers={})
            )
            await session.commit()
        relay = asyncio.create_task(outbox.relay_once())
        await held.publishing.wait()  # the relay holds the connection, publishing

        outbox.forget([published])
        # The delete waits for its turn, not for the pool (where it would fail in 0.2 s).
        await wait_for(
            lambda: len(getattr(outbox._background, "_waiters", None) or ()) == 1,
            within=10,
            what="the delete to wait for the relay",
        )
        held.release.set()
        assert await relay == 1
        await outbox.settle()

        async with sessionmaker() as session:
            left = set((await session.scalars(select(OutboxMessage.id))).all())
        assert relayed not in left
        assert published not in left, "the delete waited for the relay, then ran"
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(mine)))
            await session.commit()
        await engine.dispose()


async def test_enqueue_outside_a_unit_of_work_is_refused(
    session: AsyncSession, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match="has no outbox"):
        await enqueue(Work(session=session), sample_tasks.record.kicker(), str(tmp_path), "lost")


async def test_api_process_only_publishes(queue: JetStreamBroker) -> None:
    with pytest.raises(NotFoundError):
        await queue.jetstream.consumer_info(queue.config.stream, queue.config.durable)
