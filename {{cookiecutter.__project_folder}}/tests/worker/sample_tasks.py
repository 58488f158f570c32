"""Tasks that exist only for the queue's tests; the test workers import this module.

Each one leaves a trace in a file the test names, so a test can see what ran, and how often.
"""

import asyncio
import os
import signal
from pathlib import Path

from sqlalchemy import text

from app.core.unit_of_work import Work
from app.worker.broker import broker
from app.worker.dependencies import TaskWork

# The table `commit_fails` writes to: its test creates it, with a foreign key checked only at
# COMMIT (DEFERRABLE INITIALLY DEFERRED), so a row pointing at no parent fails the commit itself.
FAULT_TABLE = "fault_probe"
FAULT_PARENT_TABLE = "fault_parent"
MISSING_PARENT = 404


def append(path: str, line: str) -> None:
    """Append one line to the trace file: one small write with O_APPEND, so lines of concurrent
    tasks never interleave (and no buffered file object to build for each line)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def note(path: str, line: str) -> int:
    """Append one line to the trace file; return how many lines it holds now."""
    append(path, line)
    return len(Path(path).read_text(encoding="utf-8").splitlines())


@broker.task(task_name="tests.record")
async def record(path: str, text: str) -> None:
    # Only appends: the queue benchmark runs thousands of these against one file.
    append(path, text)


@broker.task(task_name="tests.slow")
async def slow(path: str, key: str, seconds: float) -> None:
    note(path, f"start {key}")
    await asyncio.sleep(seconds)
    note(path, f"done {key}")


@broker.task(task_name="tests.hold_connection")
async def hold_connection(path: str, key: str, seconds: float, work: Work = TaskWork) -> None:
    """Hold a connection of the worker's pool for ``seconds``."""
    append(path, f"start {key}")
    await work.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    append(path, f"done {key}")


@broker.task(task_name="tests.explode")
async def explode(path: str) -> None:
    note(path, "attempt")
    msg = "this task always fails"
    raise ValueError(msg)


# A long timeout: a delivery whose failed commit went unsettled would be kept alive by its
# heartbeat that long, not redelivered soon after.
@broker.task(task_name="tests.commit_fails", timeout=60)
async def commit_fails(path: str, key: str, failures: int, work: Work = TaskWork) -> None:
    """Write a row whose commit fails on the first ``failures`` attempts, a valid one after."""
    attempt = note(path, "attempt")
    parent = MISSING_PARENT if attempt <= failures else None
    await work.session.execute(
        text(f"INSERT INTO {FAULT_TABLE} (key, parent_id) VALUES (:key, :parent)"),  # noqa: S608 - a constant
        {"key": key, "parent": parent},
    )


@broker.task(task_name="tests.kill_worker")
async def kill_worker(path: str) -> None:
    note(path, "attempt")
    # The worker's whole process group (taskiq's supervisor too): no worker is left alive.
    os.killpg(os.getpgid(0), signal.SIGKILL)


@broker.task(task_name="tests.overrun", timeout=0.3)
async def overrun(path: str, seconds: float) -> None:
    """Runs past its own timeout when ``seconds`` is longer."""
    note(path, "start")
    await asyncio.sleep(seconds)
    note(path, "done")


@broker.task(task_name="tests.tick", schedule=[{"interval": 1, "schedule_id": "tests.tick"}])
async def tick() -> None:
    path = os.environ.get("TEST_TICK_FILE")
    if path:
        note(path, "tick")
