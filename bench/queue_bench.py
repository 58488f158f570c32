"""Throughput and latency of the task queue, next to raw NATS JetStream on the same server.

Run it from the root of a rendered project, with the project's interpreter::

    uv run python <template>/bench/queue_bench.py --tasks 2000

It measures, in one run:

1. raw nats-py on a temporary WORK_QUEUE stream: publish awaiting each ack, publish with 100
   acks in flight, then consume with a durable pull consumer (fetch 1, then fetch 10, ack each);
2. the project's queue end to end: one real ``taskiq worker`` process (``--workers 1
   --max-async-tasks 100``) runs the test task ``tests.record``; throughput from the first
   ``kiq`` until every line is in the trace file, and the latency of sequential ``kiq`` calls
   until their line is visible (an upper bound of ``kiq`` to task start).

Servers: ``NATS_URL`` (default ``nats://127.0.0.1:4222``) and ``DATABASE_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``; the worker's lifespan only builds an
engine, it connects lazily). Both must be on 127.0.0.1. Every stream, consumer, file and process
the run creates is removed at its end, also when it fails.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import Process
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from pydantic import SecretStr

# The project's packages (app, tests) come from the working directory, the project root.
sys.path.insert(0, str(Path.cwd()))

# isort: off
# (Whether `app` is first-party depends on which project's linter looks at this file.)
from app.settings import DatabaseSettings, Environment, NatsSettings, Settings
from app.worker.broker import broker
from tests.processes import DISCOVER_TASKS, TEST_TASKS, process_env
from tests.worker.sample_tasks import record

# isort: on

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
ALLOWED_HOST = "127.0.0.1"
DEFAULT_TASKS = 2000
MAX_TASKS = 20000
IN_FLIGHT = 100
LATENCY_SAMPLES = 200
# The size of the taskiq message of a small task such as add(1, 2).
PAYLOAD = b"x" * 135
FETCH_TIMEOUT = 5.0
WORKER_READY_TIMEOUT = 60.0
LATENCY_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.0005
WORKER_COMMAND = (
    "-m",
    "app.worker",  # `just worker`: `taskiq worker` with the service's logging
    "app.worker.broker:broker",
    TEST_TASKS,
    *DISCOVER_TASKS,  # as `just worker` finds tasks and leaves logging to the app
    "--workers",
    "1",
    "--max-async-tasks",
    str(IN_FLIGHT),
)


@dataclass
class WorkerLog:
    lines: int = 0
    not_json: int = 0
    warnings: int = 0
    # The events of those lines, and how often each came.
    warning_events: Counter[str] = field(default_factory=Counter)


@dataclass
class Results:
    raw_publish_sequential: float = 0.0
    raw_publish_in_flight: float = 0.0
    raw_consume_batch1: float = 0.0
    raw_consume_batch10: float = 0.0
    template_kiq: float = 0.0
    template_end_to_end: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    server_version: str = "?"
    worker_log: WorkerLog = field(default_factory=WorkerLog)


def progress(text: str) -> None:
    sys.stderr.write(f"... {text}\n")
    sys.stderr.flush()


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else float("nan")


def loopback_only(name: str, url: str) -> str:
    """Refuse any server that is not on this machine's 127.0.0.1."""
    host = urlsplit(url).hostname
    if "," in url or host != ALLOWED_HOST:
        msg = f"{name} must point at a single server on {ALLOWED_HOST}, not {url!r}"
        raise SystemExit(msg)
    return url


def parse_tasks(argv: Sequence[str]) -> int:
    """The ``--tasks`` option, checked against its bounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--tasks",
        type=int,
        default=DEFAULT_TASKS,
        help=f"messages and tasks per throughput test (1 to {MAX_TASKS}, default {DEFAULT_TASKS})",
    )
    tasks: int = parser.parse_args(argv).tasks  # Any from argparse; type=int made it an int
    if not 1 <= tasks <= MAX_TASKS:
        parser.error(f"--tasks must be between 1 and {MAX_TASKS}")
    return tasks


async def in_chunks(count: int, call: Callable[[int], Awaitable[object]]) -> None:
    """Run ``call(i)`` for every i below count, at most IN_FLIGHT at a time (gathered chunks)."""
    for start in range(0, count, IN_FLIGHT):
        await asyncio.gather(*(call(i) for i in range(start, min(start + IN_FLIGHT, count))))


# --- 1. raw nats-py ------------------------------------------------------------------------


async def consume(subscription: JetStreamContext.PullSubscription, count: int, batch: int) -> float:
    """Fetch and ack ``count`` messages, ``batch`` per fetch; return messages per second."""
    received = 0
    started = time.perf_counter()
    while received < count:
        messages = await subscription.fetch(min(batch, count - received), timeout=FETCH_TIMEOUT)
        for message in messages:
            await message.ack()
        received += len(messages)
    return rate(count, time.perf_counter() - started)


async def raw_baseline(client: Client, count: int, results: Results) -> None:
    jetstream = client.jetstream()
    stream = f"bench_raw_{uuid.uuid4().hex[:10]}"
    subject = f"{stream}.messages"
    await jetstream.add_stream(
        StreamConfig(
            name=stream,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    try:
        progress(f"raw: publish {count} awaiting each ack")
        started = time.perf_counter()
        for _ in range(count):
            await jetstream.publish(subject, PAYLOAD)
        results.raw_publish_sequential = rate(count, time.perf_counter() - started)

        progress(f"raw: publish {count} with {IN_FLIGHT} acks in flight")
        started = time.perf_counter()
        await in_chunks(count, lambda _: jetstream.publish(subject, PAYLOAD))
        results.raw_publish_in_flight = rate(count, time.perf_counter() - started)

        durable = "bench_raw_consumer"
        await jetstream.add_consumer(
            stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
        )
        subscription = await jetstream.pull_subscribe(subject, durable=durable, stream=stream)
        progress(f"raw: consume {count}, fetch 1")
        results.raw_consume_batch1 = await consume(subscription, count, batch=1)
        progress(f"raw: consume {count}, fetch 10")
        results.raw_consume_batch10 = await consume(subscription, count, batch=10)
        await subscription.unsubscribe()
    finally:
        with contextlib.suppress(NotFoundError):
            await jetstream.delete_stream(stream)


# --- 2. the project's queue ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def worker_process(settings: Settings, log: IO[bytes]) -> AsyncIterator[Process]:
    """One ``taskiq worker`` in its own process group; SIGTERM (then SIGKILL) at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *WORKER_COMMAND,
        cwd=Path.cwd(),
        # The integration tests' worker environment, with the benchmark's own environment name,
        # and no relay: the database need not be migrated (the test task uses none), and a
        # relay would only report the missing outbox table.
        env=process_env(
            settings, ENVIRONMENT=settings.environment.value, OUTBOX_RELAY_ENABLED="false"
        ),
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        await stop_group(process)


async def stop_group(process: Process) -> None:
    """SIGTERM the process group (its graceful stop), SIGKILL it after STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def check_alive(process: Process) -> None:
    if process.returncode is not None:
        msg = f"the worker exited with status {process.returncode}"
        raise RuntimeError(msg)


async def wait_until_listening(
    jetstream: JetStreamContext, settings: Settings, process: Process
) -> None:
    """Wait until the worker's durable consumer exists and has a pull request waiting."""
    config = broker.config
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while True:
        check_alive(process)
        with contextlib.suppress(NotFoundError):
            info: ConsumerInfo = await jetstream.consumer_info(config.stream, config.durable)
            if (info.num_waiting or 0) > 0:
                return
        if time.monotonic() > deadline:
            msg = f"the worker of queue {settings.queue_prefix} did not listen within "
            msg += f"{WORKER_READY_TIMEOUT} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.05)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


async def throughput(trace: Path, count: int, process: Process, results: Results) -> None:
    progress(f"template: {count} record tasks, {IN_FLIGHT} kiq in flight")
    started = time.perf_counter()
    await in_chunks(count, lambda i: record.kiq(str(trace), str(i)))
    results.template_kiq = rate(count, time.perf_counter() - started)
    deadline = time.monotonic() + max(60.0, count / 20)
    while line_count(trace) < count:
        check_alive(process)
        if time.monotonic() > deadline:
            msg = f"only {line_count(trace)} of {count} tasks ran in time"
            raise TimeoutError(msg)
        await asyncio.sleep(0.005)
    results.template_end_to_end = rate(count, time.perf_counter() - started)


async def latency(trace: Path, process: Process, results: Results) -> None:
    progress(f"template: latency, {LATENCY_SAMPLES} sequential kiq")
    samples: list[float] = []
    for _ in range(LATENCY_SAMPLES):
        before = size_of(trace)
        started = time.perf_counter()
        await record.kiq(str(trace), f"{time.time():.6f}")
        deadline = time.monotonic() + LATENCY_TIMEOUT
        while size_of(trace) == before:
            if time.monotonic() > deadline:
                check_alive(process)
                msg = f"a task did not run within {LATENCY_TIMEOUT} s"
                raise TimeoutError(msg)
            await asyncio.sleep(POLL_INTERVAL)
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    results.latency_p50_ms = statistics.median(samples)
    results.latency_p95_ms = cuts[94]


def read_worker_log(path: Path) -> WorkerLog:
    """Count the worker's output lines: all, those not JSON, and JSON ones at warning or above."""
    found = WorkerLog()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        found.lines += 1
        try:
            event: object = json.loads(line)  # Any until the isinstance check below
        except json.JSONDecodeError:
            found.not_json += 1
            continue
        if isinstance(event, dict) and event.get("level") not in {"debug", "info"}:
            found.warnings += 1
            found.warning_events[str(event.get("event"))[:80]] += 1
    return found


async def delete_queue_streams(jetstream: JetStreamContext) -> None:
    for stream in (broker.config.stream, broker.config.dead_letter_stream):
        with contextlib.suppress(NotFoundError):
            await jetstream.delete_stream(stream)


async def template_queue(
    jetstream: JetStreamContext, settings: Settings, count: int, results: Results, scratch: Path
) -> None:
    broker.configure(settings)
    log_path = scratch / "worker.log"
    try:
        await broker.startup()  # a producer here: it creates the streams, the worker the consumer
        with log_path.open("wb") as log:
            async with worker_process(settings, log) as process:
                progress(f"template: worker {process.pid} started, queue {settings.queue_prefix}")
                try:
                    await wait_until_listening(jetstream, settings, process)
                    await throughput(scratch / "throughput.txt", count, process, results)
                    await latency(scratch / "latency.txt", process, results)
                except Exception:
                    sys.stderr.write(f"--- worker output, last lines ---\n{tail(log_path)}\n")
                    raise
        results.worker_log = read_worker_log(log_path)
    finally:
        await broker.shutdown()
        await delete_queue_streams(jetstream)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:])


# --- 3. report ------------------------------------------------------------------------------


def report(results: Results, count: int) -> str:
    rows = [
        ("raw publish, await each ack", f"{results.raw_publish_sequential:,.0f} msg/s"),
        (f"raw publish, {IN_FLIGHT} acks in flight", f"{results.raw_publish_in_flight:,.0f} msg/s"),
        ("raw consume, fetch 1, ack each", f"{results.raw_consume_batch1:,.0f} msg/s"),
        ("raw consume, fetch 10, ack each", f"{results.raw_consume_batch10:,.0f} msg/s"),
        (f"template kiq, {IN_FLIGHT} in flight", f"{results.template_kiq:,.0f} tasks/s"),
        ("template end to end, 1 worker", f"{results.template_end_to_end:,.0f} tasks/s"),
        (
            f"template kiq -> line visible, p50 / p95 (n={LATENCY_SAMPLES})",
            f"{results.latency_p50_ms:.2f} / {results.latency_p95_ms:.2f} ms",
        ),
        (
            "template end to end / raw consume fetch 1",
            f"{ratio(results.template_end_to_end, results.raw_consume_batch1):.2f}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"N = {count}; nats-server {results.server_version}; nats-py {version('nats-py')}; "
        f"taskiq {version('taskiq')}; Python {platform.python_version()}",
        *(f"{name:<{width}}  {value:>18}" for name, value in rows),
    ]
    log = results.worker_log
    lines.append(
        f"worker output: {log.lines} lines, {log.not_json} not JSON, "
        f"{log.warnings} JSON lines at warning or above"
        + "".join(f"\n  {count} x {name}" for name, count in log.warning_events.most_common())
    )
    return "\n".join(lines) + "\n"


def server_version(client: Client) -> str:
    found = client.connected_server_version
    return f"{found.major}.{found.minor}.{found.patch}"


async def run(
    tasks: int,
    nats_url: str,
    database_url: str,
    environment: Environment = Environment.TEST,
) -> Results:
    """Both parts of the benchmark (``api_bench.py`` calls this too); the servers are checked
    to be on 127.0.0.1."""
    nats_url = loopback_only("NATS_URL", nats_url)
    database_url = loopback_only("DATABASE_URL", database_url)
    settings = Settings(
        environment=environment,
        database=DatabaseSettings(url=SecretStr(database_url)),
        nats=NatsSettings(url=nats_url, queue_prefix=f"bench_{uuid.uuid4().hex[:10]}"),
    )
    results = Results()
    client = await nats.connect(nats_url, name="bench-queue", connect_timeout=5)
    try:
        results.server_version = server_version(client)
        await raw_baseline(client, tasks, results)
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as scratch:
            await template_queue(client.jetstream(), settings, tasks, results, Path(scratch))
    finally:
        await client.close()
    return results


async def main(argv: Sequence[str]) -> int:
    tasks = parse_tasks(argv)
    # SIGTERM ends the run as Ctrl-C does: cancelled, so every cleanup below still runs.
    this_run = asyncio.current_task()
    if this_run is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this_run.cancel)
    results = await run(
        tasks,
        os.environ.get("NATS_URL", DEFAULT_NATS_URL),
        os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
    )
    sys.stdout.write(report(results, tasks))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.stderr.write("interrupted (the worker and the streams were removed)\n")
        sys.exit(130)
