"""Tasks leave only with a committed unit of work, and never silently get lost."""

from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from nats.js.errors import NotFoundError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import SessionDep
from app.core.errors import Conflict
from app.main import create_app
from app.settings import Settings
from app.worker.broker import JetStreamBroker, broker
from app.worker.dispatch import send_after_commit
from devtools.embedded import free_port
from tests.helpers import lifespan_client
from tests.worker import sample_tasks


def add_probe_route(app: FastAPI, trace: Path) -> None:
    """A route that writes a row, asks for a task, then succeeds or fails."""

    @app.post("/dispatch/{outcome}")
    async def write_and_queue(outcome: str, db: SessionDep) -> dict[str, str]:
        await db.execute(text("INSERT INTO dispatch_probe (note) VALUES (:n)"), {"n": outcome})
        send_after_commit(db, sample_tasks.record.kicker(), str(trace), outcome)
        if outcome == "refused":
            raise Conflict("refused after asking for a task")
        return {"outcome": outcome}


@pytest.fixture
async def probe_table(session: AsyncSession) -> None:
    await session.execute(text("CREATE TABLE dispatch_probe (note text NOT NULL)"))


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


async def probe_rows(session: AsyncSession) -> int:
    return int(await session.scalar(text("SELECT count(*) FROM dispatch_probe")) or 0)


async def test_task_is_sent_after_the_commit_with_the_request_id(
    client: AsyncClient, queue: JetStreamBroker, session: AsyncSession
) -> None:
    response = await client.post("/dispatch/ok", headers={"X-Request-ID": "req-7"})

    assert response.status_code == 200
    assert await probe_rows(session) == 1
    assert await queued(queue) == 1
    stored = await queue.jetstream.get_last_msg(queue.config.stream, queue.config.subject)
    assert (stored.headers or {})["request_id"] == "req-7"


async def test_rolled_back_request_sends_nothing(
    client: AsyncClient, queue: JetStreamBroker, session: AsyncSession
) -> None:
    response = await client.post("/dispatch/refused")

    assert response.status_code == 409
    assert await queued(queue) == 0
    assert await probe_rows(session) == 0


@pytest.mark.usefixtures("probe_table")
async def test_unreachable_queue_refuses_the_request_and_saves_nothing(
    settings: Settings,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    offline = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"url": f"nats://127.0.0.1:{free_port()}"})}
    )
    app = create_app(offline)
    add_probe_route(app, tmp_path / "trace.txt")
    async with lifespan_client(app) as client:
        app.state.sessionmaker = sessionmaker
        response = await client.post("/dispatch/ok")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "queue_unavailable"
    assert await probe_rows(session) == 0


async def test_api_process_only_publishes(queue: JetStreamBroker) -> None:
    with pytest.raises(NotFoundError):
        await queue.jetstream.consumer_info(queue.config.stream, queue.config.durable)
