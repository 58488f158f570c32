"""The queue end to end: real NATS JetStream, real ``taskiq worker`` processes."""

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from app.settings import Settings
from app.worker.broker import JetStreamBroker, broker
from devtools.embedded import embedded_nats, free_port
from tests.processes import (
    lines,
    process_env,
    running,
    start_scheduler,
    start_worker,
    stop,
    wait_for,
)
from tests.worker import sample_tasks
from tests.worker.queue_state import dead_letters, has_dead_letter, last_dead_letter, settled

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py


@pytest.fixture
async def app_producer(shared_queue: Settings) -> AsyncIterator[JetStreamBroker]:
    """The app's broker connected as a producer to the shared worker's queue."""
    broker.configure(shared_queue)
    await broker.startup()
    yield broker
    await broker.shutdown()


@pytest.mark.usefixtures("shared_worker", "app_producer")
async def test_worker_runs_a_task_sent_by_the_api_process(
    trace: Path, shared_worker_log: Path
) -> None:
    # The app's own broker, as the API process sends tasks, on the shared worker's queue.
    sent = await sample_tasks.record.kiq(str(trace), "hello")

    await wait_for(lambda: lines(trace) == ["hello"], what="the task to run")
    # One line says that the task started (logged before it ran): the worker's own, with the
    # task's context; taskiq's "Executing task" line is not written.
    output = lines(shared_worker_log)
    started = [
        event
        for event in (json.loads(line) for line in output if line.startswith("{"))
        if event["event"] == "task.started" and event["task_id"] == sent.task_id
    ]
    assert [event["task_name"] for event in started] == ["tests.record"]
    assert not [line for line in output if "Executing task" in line]


@pytest.mark.usefixtures("shared_worker")
async def test_failing_task_is_retried_then_dead_lettered(
    sender: JetStreamBroker, trace: Path
) -> None:
    before = await last_dead_letter(sender)
    sent = await sample_tasks.explode.kicker().with_broker(sender).kiq(str(trace))

    await wait_for(lambda: len(lines(trace)) == 3, what="three attempts")
    await wait_for(lambda: has_dead_letter(sender, after=before), what="the dead letter")
    await wait_for(lambda: settled(sender), what="the task to be settled")

    [(headers, body)] = await dead_letters(sender, after=before)
    assert headers["Dead-Letter-Reason"] == "failed"
    assert headers["Dead-Letter-Deliveries"] == "3"
    assert "ValueError: this task always fails" in headers["Dead-Letter-Error"]
    assert json.loads(body)["task_id"] == sent.task_id
    assert len(lines(trace)) == 3, "no attempt after the last one"


@pytest.mark.usefixtures("shared_worker")
async def test_task_longer_than_ack_wait_runs_once(
    sender: JetStreamBroker, shared_queue: Settings, trace: Path
) -> None:
    seconds = shared_queue.nats.ack_wait * 2.5
    # A timeout of its own: the shared worker's default one is shorter than this task.
    kicker = sample_tasks.slow.kicker().with_broker(sender).with_labels(timeout=seconds * 4)
    await kicker.kiq(str(trace), "long", seconds)

    await wait_for(lambda: "done long" in lines(trace), within=60, what="the long task")
    await wait_for(lambda: settled(sender), what="the task to be acked")

    assert lines(trace) == ["start long", "done long"], "the heartbeat must prevent a second run"


@pytest.mark.slow(seconds=3)
@pytest.mark.usefixtures("producer")
async def test_sigterm_lets_the_running_task_finish(fresh_queue: Settings, trace: Path) -> None:
    worker = start_worker(process_env(fresh_queue))
    with running(worker):
        await sample_tasks.slow.kiq(str(trace), "inflight", 2.0)
        await wait_for(lambda: "start inflight" in lines(trace), what="the task to start")

        output = stop(worker, signal.SIGTERM, timeout=15)

    assert "done inflight" in lines(trace), output
    assert worker.returncode == 0, output


async def test_idle_worker_stops_promptly_on_sigterm(fresh_queue: Settings) -> None:
    worker = start_worker(process_env(fresh_queue))
    with running(worker):
        await wait_for(lambda: _consumer_exists(fresh_queue), what="the worker to join")

        output = stop(worker, signal.SIGTERM, timeout=10)

    assert worker.returncode == 0, output
    # One JSON object per line, the supervising process's own lines included.
    printed = output.splitlines()
    assert [line for line in printed if not _is_json_object(line)] == [], output
    supervisor = [json.loads(line) for line in printed if "taskiq.process-manager" in line]
    assert any(event["event"].startswith("Stopped process") for event in supervisor), output


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


async def _consumer_exists(settings: Settings) -> bool:
    client = await nats.connect(settings.nats.url)
    try:
        info = await client.jetstream().consumer_info(
            f"{settings.queue_prefix}_tasks", f"{settings.queue_prefix}_worker"
        )
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await client.close()
    return int(info.num_waiting or 0) > 0


@pytest.mark.slow(seconds=5)
@pytest.mark.usefixtures("producer")
async def test_no_task_is_lost_when_the_worker_is_killed(
    fresh_queue: Settings, trace: Path
) -> None:
    keys = [f"k{n}" for n in range(12)]
    first = start_worker(process_env(fresh_queue))
    with running(first):
        for key in keys:
            await sample_tasks.slow.kiq(str(trace), key, 0.5)
        await wait_for(lambda: any(line.startswith("done") for line in lines(trace)), what="work")
        stop(first, signal.SIGKILL)
    done_before = {line.split()[1] for line in lines(trace) if line.startswith("done")}

    with running(start_worker(process_env(fresh_queue))):
        await wait_for(
            lambda: (
                {line.split()[1] for line in lines(trace) if line.startswith("done")} == set(keys)
            ),
            within=60,
            what="every task to finish",
        )

    assert done_before < set(keys), "the kill must interrupt the burst"


@pytest.mark.slow(seconds=5)
async def test_worker_recovers_after_a_nats_restart(
    fresh_queue: Settings, trace: Path, tmp_path: Path
) -> None:
    # A server of this test's own: restarting the shared one would disturb everyone else.
    port = free_port()
    store = tmp_path / "nats-store"
    own = fresh_queue.model_copy(
        update={"nats": fresh_queue.nats.model_copy(update={"url": f"nats://127.0.0.1:{port}"})}
    )
    with embedded_nats(store, port=port):
        worker = start_worker(process_env(own))
        await wait_for(lambda: _consumer_exists(own), what="the worker to join")
    # NATS is down now, with the worker idle; then it comes back on the same port and store.
    with running(worker), embedded_nats(store, port=port):
        sender = JetStreamBroker()
        sender.configure(own)
        await sender.startup()
        try:
            await sample_tasks.record.kicker().with_broker(sender).kiq(str(trace), "after")
            await wait_for(lambda: lines(trace) == ["after"], within=60, what="the task")
        finally:
            await sender.shutdown()


@pytest.mark.usefixtures("shared_worker")
async def test_scheduler_sends_scheduled_tasks(
    shared_queue: Settings, shared_worker_ticks: Path
) -> None:
    before = len(lines(shared_worker_ticks))
    scheduler = start_scheduler(process_env(shared_queue))
    with running(scheduler):
        await wait_for(
            lambda: len(lines(shared_worker_ticks)) >= before + 2, within=60, what="two ticks"
        )
        output = stop(scheduler, signal.SIGTERM, timeout=10)

    assert set(lines(shared_worker_ticks)[before:]) == {"tick"}
    # The scheduler holds no work in flight: it may simply die of the signal, but promptly
    # (stop() would have had to SIGKILL it otherwise).
    assert scheduler.returncode in {0, -signal.SIGTERM}, output
