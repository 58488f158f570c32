"""Two schedulers: only the holder of the schedule lease sends, so each tick is sent once; when
it is killed, the other takes the lease over and the ticks go on."""

import asyncio
import json
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from app.worker.scheduler import ScheduleLease, lease_key
from tests.processes import (
    lines,
    process_env,
    running,
    start_scheduler,
    start_worker,
    stop,
    wait_for,
)

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py

TICK = "Sending task tests.tick"  # taskiq's line for each tick a scheduler's loop reaches


def count(log: Path, text: str) -> int:
    """Lines of ``log`` holding ``text``; for ``schedule.sent``, those of the tick task only
    (the scheduler sends the app's scheduled tasks too)."""
    if not log.exists():
        return 0
    lines_of_log = log.read_text(encoding="utf-8", errors="replace").splitlines()
    found = [line for line in lines_of_log if text in line]
    if text == "schedule.sent":
        found = [line for line in found if json.loads(line).get("task_name") == "tests.tick"]
    return len(found)


@pytest.mark.slow(seconds=8)
async def test_two_schedulers_send_each_tick_once_and_a_standby_takes_over(
    fresh_queue: Settings, trace: Path, tmp_path: Path
) -> None:
    env = process_env(fresh_queue, TEST_TICK_FILE=str(trace))
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with running(start_worker(env)):
        first = start_scheduler(env, output=first_log)
        with running(first):
            await wait_for(
                lambda: count(first_log, "schedule.lease_taken") == 1, what="the first lease"
            )
            second = start_scheduler(env, output=second_log)
            with running(second):
                # The standby's loop reaches three ticks, and sends none of them.
                await wait_for(lambda: count(second_log, TICK) >= 3, what="three standby ticks")
                assert count(second_log, "schedule.sent") == 0

                stop(first, signal.SIGKILL)
                sent_by_first = count(first_log, "schedule.sent")
                await wait_for(
                    lambda: count(second_log, "schedule.lease_taken") == 1, what="the takeover"
                )
                await wait_for(
                    lambda: count(second_log, "schedule.sent") >= 2, what="ticks after it"
                )
            sent_by_second = count(second_log, "schedule.sent")

        sent = sent_by_first + sent_by_second
        # Each tick sent ran once. The first was killed at any moment: a tick it published in
        # the instant before logging it counts in the trace only.
        await wait_for(lambda: len(lines(trace)) >= sent, what="every sent tick to run")
    assert sent_by_first >= 1
    assert sent <= len(lines(trace)) <= sent + 1
    assert set(lines(trace)) == {"tick"}


async def test_one_scheduler_holds_the_lease_until_its_session_ends(engine: AsyncEngine) -> None:
    key = lease_key(f"test_{uuid.uuid4().hex}")
    first, second = ScheduleLease(engine, key), ScheduleLease(engine, key)
    try:
        assert await first.held()
        assert not await second.held()
        assert await first.held(), "the holder keeps it"

        await first.release()

        assert await second.held()
        assert not await first.held()
    finally:
        await first.release()
        await second.release()


async def test_ticks_due_together_share_one_lease_check(engine: AsyncEngine) -> None:
    # One connection: a second, concurrent session would wait for the pool, then fail.
    lease = ScheduleLease(engine, lease_key(f"test_{uuid.uuid4().hex}"))
    try:
        assert await asyncio.gather(*(lease.held() for _ in range(5))) == [True] * 5
        checked_out = engine.pool.status()
    finally:
        await lease.release()

    assert "Checked out connections: 1" in checked_out, checked_out


def test_each_service_and_environment_has_a_lease_of_its_own() -> None:
    keys = {lease_key(prefix) for prefix in ("a_production", "a_test", "b_production")}
    assert len(keys) == 3
    assert lease_key("a_production") == lease_key("a_production")
