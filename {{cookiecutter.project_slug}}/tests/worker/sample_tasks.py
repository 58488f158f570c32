"""Tasks that exist only for the queue's tests; the test workers import this module.

Each one leaves a trace in a file the test names, so a test can see what ran, and how often.
"""

import asyncio
import os
from pathlib import Path

from app.worker.broker import broker


def note(path: str, line: str) -> None:
    """Append one line to the trace file (a single small write, so lines never interleave)."""
    with Path(path).open("a", encoding="utf-8") as trace:
        trace.write(f"{line}\n")


@broker.task(task_name="tests.record")
async def record(path: str, text: str) -> None:
    note(path, text)


@broker.task(task_name="tests.slow")
async def slow(path: str, key: str, seconds: float) -> None:
    note(path, f"start {key}")
    await asyncio.sleep(seconds)
    note(path, f"done {key}")


@broker.task(task_name="tests.explode")
async def explode(path: str) -> None:
    note(path, "attempt")
    msg = "this task always fails"
    raise ValueError(msg)


@broker.task(task_name="tests.crash")
async def crash(path: str) -> None:
    note(path, "attempt")
    os._exit(1)  # the worker process dies mid-task, as on an out-of-memory kill


@broker.task(task_name="tests.tick", schedule=[{"interval": 1, "schedule_id": "tests.tick"}])
async def tick() -> None:
    path = os.environ.get("TEST_TICK_FILE")
    if path:
        note(path, "tick")
