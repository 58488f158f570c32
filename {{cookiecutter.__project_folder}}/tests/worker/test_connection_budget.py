"""A worker runs no more tasks at once than its connection pool serves without waiting."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import DatabaseSettings, OutboxSettings, Settings, WorkerSettings
from app.worker.queue import QueueConfig
from tests.processes import lines, process_env, running, start_worker, wait_for
from tests.worker import sample_tasks

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py


def test_worker_concurrency_follows_the_pool_by_default() -> None:
    pool = DatabaseSettings(pool_size=7, max_overflow=2)

    with_relay = Settings(database=pool)
    without_relay = Settings(database=pool, outbox=OutboxSettings(relay_enabled=False))

    assert with_relay.worker_concurrency == 7 + 2 - 1, "one connection is the outbox's"
    # Without the relay the outbox still deletes the rows of the tasks it published.
    assert without_relay.worker_concurrency == 7 + 2 - 1
    assert QueueConfig.from_settings(with_relay).concurrency == with_relay.worker_concurrency


def test_worker_concurrency_may_be_lower_than_the_pool() -> None:
    settings = Settings(
        database=DatabaseSettings(pool_size=10), worker=WorkerSettings(concurrency=3)
    )

    assert settings.worker_concurrency == 3


def test_worker_concurrency_beyond_the_pool_is_refused() -> None:
    with pytest.raises(ValidationError, match="WORKER_CONCURRENCY"):
        Settings(database=DatabaseSettings(pool_size=4), worker=WorkerSettings(concurrency=4))


@pytest.mark.slow(seconds=3)
@pytest.mark.usefixtures("producer")
async def test_worker_runs_no_more_tasks_at_once_than_its_pool_serves(
    fresh_queue: Settings, trace: Path
) -> None:
    # A pool of 3 (one for the outbox) and a short pool timeout: a task that waited for a
    # connection would fail. taskiq's own limit (--max-async-tasks 10) is higher on purpose.
    env = process_env(
        fresh_queue,
        DATABASE_POOL_SIZE="3",
        DATABASE_MAX_OVERFLOW="0",
        DATABASE_POOL_TIMEOUT="0.5",
    )
    keys = [str(n) for n in range(6)]
    with running(start_worker(env)):
        for key in keys:
            await sample_tasks.hold_connection.kiq(str(trace), key, 0.4)

        await wait_for(
            lambda: sum(line.startswith("done") for line in lines(trace)) == len(keys),
            what="every task to finish",
        )

    running_now = most = 0
    for line in lines(trace):
        running_now += 1 if line.startswith("start") else -1
        most = max(most, running_now)
    assert most == 2, f"{most} tasks held connections at once; the pool gives tasks 2"
    started = sorted(line for line in lines(trace) if line.startswith("start"))
    assert started == [f"start {key}" for key in keys], "each ran once: none failed on the pool"
