"""Real worker and scheduler processes for the queue's integration tests."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.settings import Settings
from devtools.embedded import free_ports

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# As `just worker` and `just scheduler` find them, plus the tasks that exist for tests only.
DISCOVER_TASKS = (
    "--fs-discover",
    "--tasks-pattern",
    "app/**/tasks.py",
    "--no-configure-logging",  # the app configures logging (JSON in these tests)
)
TEST_TASKS = "tests.worker.sample_tasks"
# How often a test asks a ``just dev`` stack's API: each request costs the stack some work.
POLL_EVERY = 0.2


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points a worker or scheduler at the test's servers and queue."""
    env = dict(os.environ)
    env.update(
        {
            "ENVIRONMENT": "test",
            "LOG_FORMAT": "json",
            "DATABASE_URL": settings.database.url.get_secret_value(),
            "NATS_URL": settings.nats.url,
            "NATS_QUEUE_PREFIX": settings.queue_prefix,
            "NATS_ACK_WAIT": str(settings.nats.ack_wait),
            "NATS_MAX_DELIVER": str(settings.nats.max_deliver),
            "NATS_RETRY_DELAY": str(settings.nats.retry_delay),
            "NATS_RETRY_MAX_DELAY": str(settings.nats.retry_max_delay),
            "NATS_PULL_TIMEOUT": str(settings.nats.pull_timeout),
            "NATS_TASK_TIMEOUT": str(settings.nats.task_timeout),
            "NATS_UNKNOWN_TASK_DELAY": str(settings.nats.unknown_task_delay),
        }
    )
    env.update(extra)
    return env


# What each process started here printed goes to a file, never to a pipe: a pipe nobody reads
# while the test runs fills up (64 KiB) and blocks the process at its next log line.
_OUTPUTS: dict[int, Path] = {}
_TEMPORARY: set[Path] = set()


def _spawn(
    arguments: list[str], env: Mapping[str, str], output: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``python <arguments>`` from the project root in its own process group; what it
    prints goes to ``output`` (appended) or to a temporary file."""
    if output is None:
        output = Path(tempfile.mkstemp(prefix="test-process-", suffix=".log")[1])
        _TEMPORARY.add(output)
    with output.open("ab") as sink:  # the child keeps its own copy of the file
        process = subprocess.Popen(  # noqa: S603 - fixed command
            [sys.executable, *arguments],
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _OUTPUTS[process.pid] = output
    return process


def _start_taskiq(
    command: Sequence[str],
    target: str,
    options: list[str],
    env: Mapping[str, str],
    *,
    modules: Sequence[str] = (),
    output: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``python -m <command> <target>`` from the project root in its own process group.

    It imports the test tasks and ``modules`` besides the app's. Its output goes to ``output``
    when given (a test can watch it while the process runs), else to a file ``stop`` reads.
    """
    # argparse takes the positional modules only before the first option.
    arguments = ["-m", *command, target, TEST_TASKS, *modules, *DISCOVER_TASKS, *options]
    return _spawn(arguments, env, output)


def start_worker(
    env: Mapping[str, str], *, modules: Sequence[str] = (), output: Path | None = None
) -> subprocess.Popen[bytes]:
    """The worker as ``just worker`` runs it; ``modules``: more task modules to import."""
    options = ["--workers", "1", "--max-async-tasks", "10"]
    return _start_taskiq(
        ["app.worker"], "app.worker.broker:broker", options, env, modules=modules, output=output
    )


def start_scheduler(
    env: Mapping[str, str], *, output: Path | None = None
) -> subprocess.Popen[bytes]:
    """``taskiq scheduler`` as ``just scheduler`` runs it."""
    return _start_taskiq(
        ["taskiq", "scheduler"],
        "app.worker.scheduler:scheduler",
        ["--skip-first-run"],
        env,
        output=output,
    )


def start_api(env: Mapping[str, str], port: int) -> subprocess.Popen[bytes]:
    """The API under uvicorn, as the container runs it, on ``port``."""
    return _spawn(["-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)], env)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> str:
    """Signal the process group, wait for it, and return what it printed."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    output = _OUTPUTS.get(process.pid)
    return output.read_text(encoding="utf-8", errors="replace") if output else ""


@contextmanager
def running(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Stop the process (SIGTERM, then SIGKILL) however the block ends; remove its output."""
    try:
        yield process
    finally:
        stop(process)
        forget(process)


def forget(process: subprocess.Popen[bytes]) -> None:
    """Remove the temporary file that held what a stopped process printed."""
    output = _OUTPUTS.pop(process.pid, None)
    if output in _TEMPORARY:
        _TEMPORARY.discard(output)
        output.unlink(missing_ok=True)


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 60,
    what: str = "it",
    every: float = 0.05,
) -> None:
    """Poll a condition about other processes every ``every`` seconds until it holds; fail
    after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            msg = f"timed out after {within} s waiting for {what}"
            raise TimeoutError(msg)
        # Another process changes the state; there is no event to wait on, so poll it.
        await asyncio.sleep(every)


def task_runs(output: str) -> Counter[tuple[str, str]]:
    """How often each (task name, order id) started, from a worker's JSON log lines."""
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return Counter(
        (event["task_name"], event.get("order_id", ""))
        for event in events
        if event.get("event") == "task.started"
    )


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def ready(client: httpx.AsyncClient, url: str) -> bool:
    """Whether the health endpoint at ``url`` answers 200 (``False`` while nothing listens)."""
    try:
        return (await client.get(url, timeout=2)).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def dev_stack(port: int, data_dir: Path, **extra_env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``just dev`` with embedded servers keeping their data in ``data_dir``; Ctrl-C at the end.

    One worker process instead of one per CPU: the stack starts up to three times in a run. Its
    processes are not measured for coverage (that would make them half again as slow): the
    processes of the other tests run the same code of the app.
    """
    unset = {"DATABASE_URL", "NATS_URL", "COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(extra_env)
    command = [sys.executable, "-m", "devtools.dev", "--embedded", "--no-reload", "--workers", "1"]
    # Not the API's port, which the caller chose but nothing listens on yet.
    nats_port = next(candidate for candidate in free_ports(2) if candidate != port)
    command += ["--port", str(port), "--nats-port", str(nats_port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(  # noqa: S603 - fixed command
        command, cwd=PROJECT_ROOT, env=env, start_new_session=True
    )
    try:
        yield process
    finally:
        try:
            stop(process, signal.SIGINT, timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):  # nothing of the stack may linger
                os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A folder directly in the system temp folder, removed afterwards.

    Run as root, embedded PostgreSQL runs as another user that must reach its data folder, and
    pytest's own temp folders are private to the user running pytest.
    """
    folder = Path(tempfile.mkdtemp(prefix="dev-stack-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
