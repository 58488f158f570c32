"""Shared fixtures: real PostgreSQL and NATS, from the environment or embedded.

``TEST_DATABASE_URL`` (a server to create a throwaway database on) and ``NATS_URL`` point the
tests at running servers, as in CI or a compose stack. Unset, the fixtures start embedded
servers in a temporary folder and stop them at the end of the run.

Each test runs inside a transaction on one connection, rolled back at the end: the request's
unit of work commits and rolls back savepoints inside it, so tests see real commit and rollback
behaviour and leave nothing behind.
"""

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from structlog.types import EventDict

from app.core.database import Reader
from app.core.logging import configure_logging
from app.main import create_app
from app.settings import DatabaseSettings, Environment, NatsSettings, Settings
from app.worker.broker import JetStreamBroker, broker
from devtools.embedded import embedded_nats, embedded_postgresql, env_or_none
from tests.helpers import delete_streams, lifespan_client, throwaway_database
from tests.nats_servers import Cluster, nats_cluster
from tests.processes import process_env, running, start_worker, wait_for
from tests.worker.queue_state import joined

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Test processes per CPU with ``-n auto`` (``just test``), plus one, and at most this many in all.
PROCESSES_PER_CPU, MAX_PROCESSES = 2, 8


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:  # noqa: ARG001 - xdist's API
    """How many test processes ``-n auto`` starts: twice the CPUs, since the slow tests mostly
    wait on other processes (workers, servers, elections) and another test can use the CPU
    meanwhile, and one more for the few that only wait (a cluster's elections, a scheduler's
    ticks); capped, because each one creates a database and may start a worker of its own.

    On 2 CPUs, 5 processes ran the suite 4% faster than 4 in three alternating runs, and 6 no
    faster than 5 while using 10% more CPU.
    """
    return min(MAX_PROCESSES, PROCESSES_PER_CPU * (os.cpu_count() or 1) + 1)


def _expected_seconds(item: pytest.Item) -> float:
    """How long a test is expected to take, for the order of the run: a ``slow`` test about a
    second unless its marker says more (``@pytest.mark.slow(seconds=12)``), any other none."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 1.0))


# The xdist group of the tests on the shared worker: with ``--dist loadgroup`` one test process
# runs them all, one after another, so a run starts one shared worker instead of one per process.
SHARED_WORKER_GROUP = "shared_worker"


def _on_the_shared_worker(item: pytest.Item) -> bool:
    return SHARED_WORKER_GROUP in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests on the shared worker, and order the others longest first, so the long
    ones run side by side and the quick ones fill the gaps, instead of one process ending the
    run with a queue of long ones.

    ``just test`` (``--dist loadgroup``) gives the group to the first process and, to each of
    the others, one test and then a second one before any has ended; after that, the next
    test to whichever process ends one. So the ``processes - 1`` longest tests come first, each
    followed by a quick one (a cluster's two tests in one process made the run 7 s longer than
    it had to be), then long and quick ones alternate.
    """
    grouped = [item for item in items if _on_the_shared_worker(item)]
    for item in grouped:
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER_GROUP))
    others = [item for item in items if not _on_the_shared_worker(item)]
    slow = sorted((i for i in others if _expected_seconds(i)), key=_expected_seconds, reverse=True)
    quick = [item for item in others if not _expected_seconds(item)]
    first = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) - 1)
    alternating = [test for pair in zip(slow[first:], quick[first:], strict=False) for test in pair]
    paired = len(alternating) // 2
    items[:] = [
        *grouped,
        *slow[:first],
        *quick[:first],
        *alternating,
        *slow[first + paired :],
        *quick[first + paired :],
    ]


@pytest.fixture(scope="session", autouse=True)
def _logging_configured() -> None:
    """Logging as every process of the service sets it up at start (``create_app``, the
    worker), whichever test a test process happens to run first."""
    configure_logging(Settings(environment=Environment.TEST))


@pytest.fixture
def log_events() -> Iterator[list[EventDict]]:
    """The service's log events while the test runs, as dicts: ``"event"``, ``"log_level"``,
    the bound context and the fields, every level included. Request it after the fixtures that
    build an app (``client``): ``create_app`` configures logging, which ends a capture begun
    before."""
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as events:
        yield events


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server with JetStream."""
    if url := env_or_none("NATS_URL"):
        yield url
        return
    with embedded_nats(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server, as a URL to a database that already exists on it."""
    if url := env_or_none("TEST_DATABASE_URL"):
        yield url
        return
    with embedded_postgresql() as url:
        yield url


def alembic_config(database_url: str) -> Config:
    """The project's Alembic configuration, pointed at ``database_url``."""
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh database for this test run, migrated to the latest revision, dropped at the end."""
    # TEST_DATABASE_PREFIX lets a caller find this run's database (the template's own tests do).
    prefix = env_or_none("TEST_DATABASE_PREFIX") or "test"
    async with throwaway_database(postgres_server_url, prefix=prefix) as url:
        # Alembic's env.py runs its own event loop; give it a thread of its own.
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database, for the fixtures' own connections."""
    test_engine = create_async_engine(database_url, pool_size=5)
    yield test_engine
    await test_engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's transaction: their commits and rollbacks become savepoints."""
    return async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for arranging and checking data in a test."""
    async with sessionmaker() as test_session:
        yield test_session


def queue_settings(nats_url: str, prefix: str) -> NatsSettings:
    """A queue of the test's own on the test NATS, with short timings for fast retries (and
    for the tests where NATS is down: local servers answer within a second or never)."""
    return NatsSettings(
        url=nats_url,
        queue_prefix=prefix,
        connect_timeout=1,
        ack_wait=2,
        max_deliver=3,
        retry_delay=0.2,
        pull_timeout=0.5,
    )


@pytest.fixture(scope="session")
async def queue_prefix(nats_url: str) -> AsyncIterator[str]:
    """The queue of this test run, deleted at its end."""
    prefix = f"test_{uuid.uuid4().hex[:10]}"
    yield prefix
    await delete_streams(nats_url, prefix)


@pytest.fixture(scope="session")
def settings(database_url: str, nats_url: str, queue_prefix: str) -> Settings:
    """Settings for a test: the test servers, the run's own queue, test environment.

    Built once per test process (they are frozen): building them reads the environment and
    the ``.env`` file for each nested model, a sixth of the CPU of the quick tests when each
    test built its own.
    """
    return Settings(
        environment=Environment.TEST,
        database=DatabaseSettings(url=SecretStr(database_url), pool_size=2),
        nats=queue_settings(nats_url, queue_prefix),
    )


@pytest.fixture
async def fresh_queue(settings: Settings, nats_url: str) -> AsyncIterator[Settings]:
    """Settings with a queue of this test's own, deleted afterwards (for worker tests)."""
    prefix = f"test_{uuid.uuid4().hex[:10]}"
    yield settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"queue_prefix": prefix})}
    )
    await delete_streams(nats_url, prefix)


@asynccontextmanager
async def own_broker(settings: Settings) -> AsyncIterator[JetStreamBroker]:
    """A started producer of its own on the queue of ``settings`` (the app's broker belongs to
    whichever app a test starts)."""
    own = JetStreamBroker()
    own.configure(settings)
    await own.startup()
    try:
        yield own
    finally:
        await own.shutdown()


@pytest.fixture
async def publisher(fresh_queue: Settings) -> AsyncIterator[JetStreamBroker]:
    """A producer of the test's own on the test's own queue."""
    async with own_broker(fresh_queue) as own:
        yield own


@pytest.fixture
async def producer(fresh_queue: Settings) -> AsyncIterator[JetStreamBroker]:
    """The app's broker connected as a producer to the test's own queue."""
    broker.configure(fresh_queue)
    await broker.startup()
    yield broker
    await broker.shutdown()


# The shared worker's default task timeout: longer than `overrun`'s own (0.3 s) and than the
# sleep a test gives it, so only the task's own timeout can stop that one.
SHARED_TASK_TIMEOUT = 1.0
SHARED_UNKNOWN_TASK_DELAY = 0.2
# Longer than the heartbeat's period (ack_wait / 3): JetStream takes an in-progress signal for a
# NAKed message as one for a redelivery, so a heartbeat left running after a failure would hold
# the retry back (the retry tests then time out). Every retry waits as long (no growth).
SHARED_RETRY_DELAY = 0.8


@pytest.fixture(scope="session")
async def shared_queue(database_url: str, nats_url: str) -> AsyncIterator[Settings]:
    """Settings of the queue the shared worker serves, deleted at the end of the run."""
    prefix = f"test_{uuid.uuid4().hex[:10]}"
    nats_settings = queue_settings(nats_url, prefix).model_copy(
        update={
            "task_timeout": SHARED_TASK_TIMEOUT,
            "unknown_task_delay": SHARED_UNKNOWN_TASK_DELAY,
            "retry_delay": SHARED_RETRY_DELAY,
            "retry_max_delay": SHARED_RETRY_DELAY,
        }
    )
    yield Settings(
        environment=Environment.TEST,
        database=DatabaseSettings(url=SecretStr(database_url), pool_size=2),
        nats=nats_settings,
    )
    await delete_streams(nats_url, prefix)


@pytest.fixture(scope="session")
async def sender(shared_queue: Settings) -> AsyncIterator[JetStreamBroker]:
    """A producer on the shared queue (a broker of its own: tests may reconfigure the app's)."""
    async with own_broker(shared_queue) as queue:
        yield queue


@pytest.fixture(scope="session")
def shared_worker_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the shared worker's files."""
    return tmp_path_factory.mktemp("shared-worker")


@pytest.fixture(scope="session")
def shared_worker_log(shared_worker_files: Path) -> Path:
    """What the shared worker prints (its JSON log lines), appended as it runs."""
    return shared_worker_files / "worker.log"


@pytest.fixture(scope="session")
def shared_worker_ticks(shared_worker_files: Path) -> Path:
    """Where the shared worker notes each run of the scheduled ``tests.tick``."""
    return shared_worker_files / "ticks.txt"


@pytest.fixture(scope="session")
async def shared_worker(
    shared_queue: Settings,
    sender: JetStreamBroker,
    shared_worker_log: Path,
    shared_worker_ticks: Path,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """One real ``taskiq worker`` on the shared queue, for every test that needs a worker of the
    usual kind and neither stops nor reconfigures it (a worker takes seconds to start).

    Tests on it run one at a time, in one pytest process (they are one xdist group), so each
    finds the queue as the one before left it: settled, or about to be. Each one identifies what
    it sent (task ids, trace files of its own) rather than counting everything in the queue.
    """
    env = process_env(shared_queue, TEST_TICK_FILE=str(shared_worker_ticks))
    worker = start_worker(env, output=shared_worker_log)
    with running(worker):
        await wait_for(lambda: joined(sender), within=60, what="the shared worker to join")
        yield worker


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The application under test (tests may add routes before the client starts it)."""
    return create_app(settings)


@pytest.fixture
async def client(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession], connection: AsyncConnection
) -> AsyncIterator[AsyncClient]:
    """An in-process HTTP client; requests run their unit of work, and their reads, in the
    test's transaction."""
    async with lifespan_client(app) as http:
        app.state.sessionmaker = sessionmaker
        app.state.reader = Reader.within(connection)
        yield http


@pytest.fixture
async def committing_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """A client whose requests really commit (clean up what such a test creates)."""
    async with lifespan_client(app) as http:
        yield http


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A three-node JetStream cluster of the test's own (a failover test leaves a node dead)."""
    with nats_cluster(3) as servers:
        yield servers
