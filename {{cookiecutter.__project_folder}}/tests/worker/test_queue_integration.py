"""The queue end to end: real NATS JetStream, real ``taskiq worker`` processes."""

import json
import signal
from pathlib import Path

import nats
import pytest

from app.settings import Settings
from app.worker.broker import JetStreamBroker
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
from tests.worker.queue_state import dead_letters, has_dead_letter


@pytest.mark.usefixtures("producer")
async def test_worker_runs_a_task_sent_by_the_api_process(
    fresh_queue: Settings, trace: Path
) -> None:
    with running(start_worker(process_env(fresh_queue))):
        await sample_tasks.record.kiq(str(trace), "hello")

        await wait_for(lambda: lines(trace) == ["hello"], what="the task to run")


async def test_failing_task_is_retried_then_dead_lettered(
    producer: JetStreamBroker, fresh_queue: Settings, trace: Path
) -> None:
    with running(start_worker(process_env(fresh_queue))):
        sent = await sample_tasks.explode.kiq(str(trace))

        await wait_for(lambda: len(lines(trace)) == 3, what="three attempts")
        await wait_for(lambda: has_dead_letter(producer), what="the dead letter")

    [(headers, body)] = await dead_letters(producer)
    assert headers["Dead-Letter-Reason"] == "failed"
    assert headers["Dead-Letter-Deliveries"] == "3"
    assert "ValueError: this task always fails" in headers["Dead-Letter-Error"]
    assert json.loads(body)["task_id"] == sent.task_id
    assert len(lines(trace)) == 3, "no attempt after the last one"


@pytest.mark.usefixtures("producer")
async def test_task_longer_than_ack_wait_runs_once(fresh_queue: Settings, trace: Path) -> None:
    seconds = fresh_queue.nats.ack_wait * 2.5
    with running(start_worker(process_env(fresh_queue))):
        await sample_tasks.slow.kiq(str(trace), "long", seconds)

        await wait_for(lambda: "done long" in lines(trace), within=60, what="the long task")

    assert lines(trace) == ["start long", "done long"], "the heartbeat must prevent a second run"


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


async def test_scheduler_sends_scheduled_tasks(fresh_queue: Settings, trace: Path) -> None:
    env = process_env(fresh_queue, TEST_TICK_FILE=str(trace))
    scheduler = start_scheduler(env)
    with running(start_worker(env)), running(scheduler):
        await wait_for(lambda: len(lines(trace)) >= 2, within=60, what="two ticks")
        output = stop(scheduler, signal.SIGTERM, timeout=10)

    assert set(lines(trace)) == {"tick"}
    # The scheduler holds no work in flight: it may simply die of the signal, but promptly
    # (stop() would have had to SIGKILL it otherwise).
    assert scheduler.returncode in {0, -signal.SIGTERM}, output
