"""The service's own tasks (``app/worker/tasks.py``), run as a worker calls them."""

from structlog.types import EventDict

from app.worker.tasks import heartbeat


async def test_heartbeat_logs_a_sign_of_life(log_events: list[EventDict]) -> None:
    assert await heartbeat() == "alive"

    assert [event["log_level"] for event in log_events if event["event"] == "worker.heartbeat"] == [
        "info"
    ]
