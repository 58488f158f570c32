"""The worker's fault handling, end to end: real ``taskiq worker`` processes, NATS JetStream and
PostgreSQL. Every fault ends in exactly one of: the task ran (and its unit of work committed),
or it is in the dead letters with the reason; and nothing is left pending in NATS.

Tests that need one worker of the usual kind share the run's shared worker (``shared_worker``,
tests/conftest.py: a worker takes seconds to start); tests that start and stop workers have a
queue of their own.
"""

import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from taskiq import TaskiqMessage
from taskiq.kicker import AsyncKicker

from app.settings import Settings
from app.worker.broker import JetStreamBroker
from tests.processes import lines, process_env, running, start_worker, stop, wait_for
from tests.worker import sample_tasks
from tests.worker.queue_state import (
    consumer,
    dead_letter_of,
    dead_letters,
    delivered_up_to,
    has_dead_letter,
    settled,
)

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py


@pytest.fixture
async def fault_table(engine: AsyncEngine) -> AsyncIterator[None]:
    """The table ``commit_fails`` writes to, committed so that the worker sees it."""
    async with engine.begin() as connection:
        await connection.execute(
            text(f"CREATE TABLE {sample_tasks.FAULT_PARENT_TABLE} (id integer PRIMARY KEY)")
        )
        await connection.execute(
            text(
                f"CREATE TABLE {sample_tasks.FAULT_TABLE} (key text NOT NULL, parent_id integer "
                f"REFERENCES {sample_tasks.FAULT_PARENT_TABLE} (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    yield
    async with engine.begin() as connection:
        await connection.execute(
            text(f"DROP TABLE {sample_tasks.FAULT_TABLE}, {sample_tasks.FAULT_PARENT_TABLE}")
        )


async def written_keys(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.scalars(text(f"SELECT key FROM {sample_tasks.FAULT_TABLE}"))  # noqa: S608 - a constant
        return list(rows)


async def dead_letter(broker: JetStreamBroker, task_id: str) -> dict[str, str]:
    """The headers of the task's dead letter; fails the test when it has none."""
    headers = await dead_letter_of(broker, task_id)
    assert headers is not None, f"no dead letter for task {task_id}"
    return headers


def logged(path: Path, event: str) -> list[Mapping[str, object]]:
    """The JSON log lines of a process that record ``event``."""
    found: list[Mapping[str, object]] = []
    for line in lines(path):
        with contextlib.suppress(ValueError):  # not a line of the app's JSON logs
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
    return found


# A failing commit: the error escapes taskiq (it runs in the TaskWork's teardown).


@pytest.mark.usefixtures("shared_worker", "fault_table")
async def test_task_whose_commit_fails_once_is_retried_and_commits(
    sender: JetStreamBroker, engine: AsyncEngine, trace: Path
) -> None:
    kicker = sample_tasks.commit_fails.kicker().with_broker(sender)
    sent = await kicker.kiq(str(trace), "second-time-lucky", 1)

    await wait_for(lambda: settled(sender), within=60, what="the task to be settled")

    assert await written_keys(engine) == ["second-time-lucky"]
    assert lines(trace) == ["attempt", "attempt"]
    assert await dead_letter_of(sender, sent.task_id) is None


@pytest.mark.usefixtures("shared_worker", "fault_table")
async def test_task_whose_commit_always_fails_is_dead_lettered(
    sender: JetStreamBroker, engine: AsyncEngine, trace: Path
) -> None:
    kicker = sample_tasks.commit_fails.kicker().with_broker(sender)
    sent = await kicker.kiq(str(trace), "never", 99)

    await wait_for(lambda: settled(sender), within=60, what="the task to be settled")

    headers = await dead_letter(sender, sent.task_id)
    assert headers["Dead-Letter-Reason"] == "failed"
    assert headers["Dead-Letter-Deliveries"] == "3"
    assert "IntegrityError" in headers["Dead-Letter-Error"]
    assert "ForeignKeyViolationError" in headers["Dead-Letter-Error"]
    assert lines(trace) == ["attempt"] * 3
    assert await written_keys(engine) == []


# Timeouts: the task's own, else the worker's default.


@pytest.mark.usefixtures("shared_worker")
async def test_task_past_its_own_timeout_fails_and_is_dead_lettered(
    sender: JetStreamBroker, trace: Path
) -> None:
    # 0.6 s: past the task's timeout (0.3 s), within the worker's default (1 s).
    sent = await sample_tasks.overrun.kicker().with_broker(sender).kiq(str(trace), 0.6)

    await wait_for(lambda: settled(sender), within=60, what="the task to be settled")

    assert lines(trace) == ["start"] * 3, "it must never finish"
    headers = await dead_letter(sender, sent.task_id)
    assert headers["Dead-Letter-Reason"] == "failed"
    assert headers["Dead-Letter-Deliveries"] == "3"
    assert headers["Dead-Letter-Error"].startswith("TimeoutError")


@pytest.mark.usefixtures("shared_worker")
async def test_task_without_a_timeout_gets_the_default_one(
    sender: JetStreamBroker, trace: Path
) -> None:
    sent = await sample_tasks.slow.kicker().with_broker(sender).kiq(str(trace), "endless", 60)

    await wait_for(lambda: settled(sender), within=60, what="the task to be settled")

    assert lines(trace) == ["start endless"] * 3
    headers = await dead_letter(sender, sent.task_id)
    assert headers["Dead-Letter-Reason"] == "failed"
    assert headers["Dead-Letter-Error"].startswith("TimeoutError")


# Messages the worker cannot run.


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"not json", "JSONDecodeError: Expecting value"),
        (b'{"task_name": 7}', "ValidationError: 5 validation errors for TaskiqMessage"),
        (
            b'{"task_id": "t1", "task_name": "tests.record", "labels": {"timeout": "soon"}, '
            b'"args": ["/dev/null", "never"], "kwargs": {}}',
            "ValueError: could not convert string to float: 'soon'",
        ),
    ],
    ids=["not-json", "not-a-task", "bad-timeout"],
)
@pytest.mark.usefixtures("shared_worker")
async def test_unreadable_message_is_dead_lettered_at_once_and_the_worker_goes_on(
    sender: JetStreamBroker, trace: Path, garbage: bytes, error: str
) -> None:
    await sender.jetstream.publish(sender.config.subject, garbage)
    await sample_tasks.record.kicker().with_broker(sender).kiq(str(trace), "after")

    await wait_for(lambda: lines(trace) == ["after"], within=60, what="the next task")
    await wait_for(lambda: settled(sender), within=60, what="both to be settled")

    [headers] = [headers for headers, body in await dead_letters(sender) if body == garbage]
    assert headers["Dead-Letter-Reason"] == "unreadable"
    assert headers["Dead-Letter-Deliveries"] == "1"
    assert headers["Dead-Letter-Error"].startswith(error)


@pytest.mark.usefixtures("shared_worker")
async def test_task_no_worker_ever_knows_is_dead_lettered(sender: JetStreamBroker) -> None:
    unknown: AsyncKicker[[], None] = AsyncKicker("tests.nobody_knows", broker=sender, labels={})
    sent = await unknown.kiq()

    await wait_for(lambda: settled(sender), within=60, what="the task to be settled")

    headers = await dead_letter(sender, sent.task_id)
    assert headers["Dead-Letter-Reason"] == "unknown_task"
    assert headers["Dead-Letter-Deliveries"] == "3"
    assert "'tests.nobody_knows'" in headers["Dead-Letter-Error"]


@pytest.mark.slow(seconds=5)
async def test_task_no_worker_knows_yet_runs_once_a_worker_knows_it(
    producer: JetStreamBroker, fresh_queue: Settings, trace: Path, tmp_path: Path
) -> None:
    # Long enough for the old worker to stop before it sees the task again (an idle worker
    # stops within a second or two: its pull times out, then its supervisor notices).
    env = process_env(fresh_queue, NATS_UNKNOWN_TASK_DELAY="4")
    log = tmp_path / "old-worker.log"
    old = start_worker(env, output=log)
    with running(old):
        later: AsyncKicker[[str], None] = AsyncKicker("tests.later", broker=producer, labels={})
        sent = await later.kiq(str(trace))
        await wait_for(lambda: bool(logged(log, "task.unknown")), within=60, what="the old worker")

        assert await delivered_up_to(producer) == 1
        info = await consumer(producer)
        assert info.num_ack_pending == 1, "put back (a NAK), neither acked nor dropped"
        stop(old)

    with running(start_worker(env, modules=["tests.worker.later_tasks"])):
        await wait_for(lambda: lines(trace) == ["later"], within=60, what="the task to run")
        await wait_for(lambda: settled(producer), within=60, what="the task to be settled")

    assert [entry["task_name"] for entry in logged(log, "task.unknown")] == ["tests.later"]
    assert lines(trace) == ["later"]
    assert await dead_letter_of(producer, sent.task_id) is None


# A task that kills every worker that runs it.


async def run_until_it_dies(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    worker = start_worker(env)
    with running(worker):
        await wait_for(lambda: worker.poll() is not None, within=60, what="the worker to die")
    return worker


@pytest.mark.slow(seconds=4)
async def test_task_that_kills_its_worker_each_time_is_dead_lettered_by_the_next_worker(
    producer: JetStreamBroker,
    fresh_queue: Settings,
    trace: Path,
    shared_worker: subprocess.Popen[bytes],
) -> None:
    # The shortest ack_wait: nothing here runs long enough to need a heartbeat. Two deliveries
    # at most: each one costs a worker (a start of about a second of CPU).
    quick = fresh_queue.model_copy(
        update={"nats": fresh_queue.nats.model_copy(update={"ack_wait": 1, "max_deliver": 2})}
    )
    env = process_env(quick)
    await sample_tasks.kill_worker.kiq(str(trace))

    for attempt in range(1, quick.nats.max_deliver + 1):
        # NATS delivers it again ack_wait after the crash, to the next worker once it is up.
        worker = await run_until_it_dies(env)
        # The task killed its worker's process group, supervisor included (so taskiq restarted
        # nothing), and nothing outside it: this test and another worker run on.
        assert worker.returncode == -signal.SIGKILL
        assert shared_worker.poll() is None
        assert len(lines(trace)) == attempt

    with running(start_worker(env)) as last:
        await wait_for(lambda: has_dead_letter(producer), within=60, what="the dead letter")
        await wait_for(lambda: settled(producer), within=60, what="the task to be settled")
        assert last.poll() is None, "judged before it ran: the worker lives"

    [(headers, _)] = await dead_letters(producer)
    assert headers["Dead-Letter-Reason"] == "abandoned"
    assert headers["Dead-Letter-Deliveries"] == "3"
    assert lines(trace) == ["attempt"] * 2, "no 3rd run"


# JetStream's deduplication of the ids the outbox publishes with.


@pytest.mark.usefixtures("shared_worker")
async def test_copy_of_a_task_published_again_under_its_id_is_dropped(
    sender: JetStreamBroker, trace: Path
) -> None:
    task_id = uuid.uuid4().hex
    message = TaskiqMessage(
        task_id=task_id,
        task_name=sample_tasks.record.task_name,
        labels={},
        args=[str(trace), "once"],
        kwargs={},
    )
    body = sender.formatter.dumps(message).message
    stream = sender.config.stream
    before = (await sender.jetstream.stream_info(stream)).state.last_seq

    await sender.publish(task_id, body, {})
    await sender.publish(task_id, body, {})

    assert (await sender.jetstream.stream_info(stream)).state.last_seq == before + 1
    await wait_for(lambda: lines(trace) == ["once"], within=60, what="the task to run")
    await wait_for(lambda: settled(sender), within=60, what="the task to be acked")

    # Acked and gone from the work queue; its id is still within the duplicate window.
    await sender.publish(task_id, body, {})

    assert (await sender.jetstream.stream_info(stream)).state.last_seq == before + 1
    assert await delivered_up_to(sender) == before + 1
    assert lines(trace) == ["once"]
