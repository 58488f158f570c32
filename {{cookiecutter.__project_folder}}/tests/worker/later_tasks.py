"""A task only some test workers know: imported by the worker a test starts with it, never by
the others (a newer version of the workers, deployed after the producers)."""

from app.worker.broker import broker
from tests.worker.sample_tasks import note


@broker.task(task_name="tests.later")
async def later(path: str) -> None:
    note(path, "later")
