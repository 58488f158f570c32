"""The service's own tasks (``app/worker/tasks.py``), run as a worker calls them."""

import logging

import pytest

from app.worker.tasks import heartbeat


async def test_heartbeat_logs_a_sign_of_life(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    assert await heartbeat() == "alive"

    events = [r.msg.get("event") for r in caplog.records if isinstance(r.msg, dict)]
    assert "worker.heartbeat" in events
