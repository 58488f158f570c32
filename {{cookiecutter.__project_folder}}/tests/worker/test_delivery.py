"""How one delivery is settled, in-process: a real ``nats.aio.msg.Msg`` whose acks go to a
client that records them (the queue tests check the same paths against a real server)."""

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Protocol, cast

import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from app.settings import Environment, NatsSettings, Settings
from app.worker.delivery import Delivery
from app.worker.queue import QueueConfig
from tests.processes import wait_for

# Fast heartbeats (every ack_wait / 3 = 0.1 s); retries after 0.2 s, 0.4 s; three attempts.
CONFIG = dataclasses.replace(
    QueueConfig.from_settings(
        Settings(environment=Environment.TEST, nats=NatsSettings(max_deliver=3, retry_delay=0.2))
    ),
    ack_wait=0.3,
)

# What a message sends to its reply subject; nats-py acks with an empty payload.
ACK, NAK, PROGRESS = b"", Msg.Ack.Nak, Msg.Ack.Progress


class RecordingClient:
    """Stands in for the NATS client: keeps what the message sent to its reply subject."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.failing = False

    async def publish(self, subject: str, payload: bytes = b"") -> None:  # noqa: ARG002 - Msg's call
        if self.failing:
            raise nats.errors.ConnectionClosedError
        self.sent.append(payload)


class Settlements:
    """What the deliveries under test did besides talking to NATS."""

    def __init__(self) -> None:
        self.dead_letters: list[tuple[str, str]] = []
        self.settled: list[Delivery] = []

    async def dead_letter(self, message: Msg, reason: str, error: str) -> None:  # noqa: ARG002
        self.dead_letters.append((reason, error))


class MakeDelivery(Protocol):
    def __call__(self, *, attempt: int = 1, timeout: float = 30) -> Delivery: ...


@pytest.fixture
def client() -> RecordingClient:
    return RecordingClient()


@pytest.fixture
def outcomes() -> Settlements:
    return Settlements()


@pytest.fixture
async def make(client: RecordingClient, outcomes: Settlements) -> AsyncIterator[MakeDelivery]:
    """Deliveries of one message (delivered ``attempt`` times); their heartbeats end with the
    test."""
    made: list[Delivery] = []

    def make_delivery(*, attempt: int = 1, timeout: float = 30) -> Delivery:
        message = Msg(
            _client=cast("Client", client),
            reply=f"$JS.ACK.tasks.worker.{attempt}.7.7.1700000000000000000.0",
        )
        delivery = Delivery(
            message,
            task_id="task-1",
            task_name="tests.sample",
            timeout=timeout,
            config=CONFIG,
            dead_letter=outcomes.dead_letter,
            on_settled=outcomes.settled.append,
        )
        made.append(delivery)
        return delivery

    yield make_delivery
    for delivery in made:
        delivery.cancel()
    # Let the cancelled heartbeats finish inside this test.
    await wait_for(lambda: not any(delivery.heartbeat_running for delivery in made))


def nak_delay(payload: bytes) -> float:
    """The delay a NAK asks for, in seconds."""
    assert payload.startswith(NAK + b" ")
    return float(json.loads(payload.removeprefix(NAK + b" "))["delay"]) / 1e9


async def test_success_is_acked(
    make: MakeDelivery, client: RecordingClient, outcomes: Settlements
) -> None:
    delivery = make()

    await delivery.settle()

    assert client.sent == [ACK]
    assert outcomes.settled == [delivery]
    assert delivery.settled


async def test_settling_twice_settles_once(
    make: MakeDelivery, client: RecordingClient, outcomes: Settlements
) -> None:
    delivery = make()

    await delivery.settle()
    await delivery.settle()

    assert client.sent == [ACK]
    assert outcomes.settled == [delivery]


@pytest.mark.parametrize(("attempt", "delay"), [(1, 0.2), (2, 0.4)])
async def test_failure_is_put_back_with_a_growing_delay(
    make: MakeDelivery, client: RecordingClient, outcomes: Settlements, attempt: int, delay: float
) -> None:
    delivery = make(attempt=attempt)
    delivery.error = "ValueError: no"

    await delivery.settle()

    [payload] = client.sent
    assert nak_delay(payload) == pytest.approx(delay)
    assert outcomes.dead_letters == []


async def test_failure_of_the_last_attempt_is_dead_lettered(
    make: MakeDelivery, client: RecordingClient, outcomes: Settlements
) -> None:
    delivery = make(attempt=CONFIG.max_deliver)
    delivery.error = "ValueError: no"

    await delivery.settle()

    assert outcomes.dead_letters == [("failed", "ValueError: no")]
    assert client.sent == [], "dead_letter terminates the message itself"


async def test_handling_that_raised_past_taskiq_is_a_failure(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make()

    async def handle() -> None:
        msg = "the commit failed"
        raise RuntimeError(msg)

    handler = asyncio.create_task(handle())
    delivery.bind(handler)
    with contextlib.suppress(RuntimeError):
        await handler

    await wait_for(lambda: bool(client.sent), within=15, what="the settlement")
    assert delivery.error == "RuntimeError: the commit failed"
    [payload] = client.sent
    assert nak_delay(payload) == pytest.approx(CONFIG.retry_delay)


async def test_handling_that_ended_without_settling_is_a_failure(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make()

    async def handle() -> None:
        return None

    handler = asyncio.create_task(handle())
    delivery.bind(handler)
    await handler

    await wait_for(lambda: bool(client.sent), within=15, what="the settlement")
    assert delivery.error == "the handling ended without a result"
    assert nak_delay(client.sent[0]) == pytest.approx(CONFIG.retry_delay)


async def test_recorded_error_is_kept_when_the_handling_then_fails(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make()
    delivery.error = "ValueError: the task failed"

    async def handle() -> None:
        msg = "and then its teardown"
        raise RuntimeError(msg)

    handler = asyncio.create_task(handle())
    delivery.bind(handler)
    with contextlib.suppress(RuntimeError):
        await handler

    await wait_for(lambda: bool(client.sent), within=15, what="the settlement")
    assert delivery.error == "ValueError: the task failed"


async def test_cancelled_handling_is_put_back_at_once(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make(attempt=CONFIG.max_deliver)  # never a dead letter: it did not fail
    handler = asyncio.create_task(asyncio.Event().wait())
    delivery.bind(handler)

    handler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await handler

    await wait_for(lambda: bool(client.sent), within=15, what="the settlement")
    assert client.sent == [NAK], "no delay: another worker may take it now"


async def test_handling_that_ends_after_the_settlement_changes_nothing(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make()
    handler = asyncio.create_task(asyncio.sleep(0))
    await handler
    await delivery.settle()
    running = asyncio.all_tasks()

    delivery.handler_done(handler)

    assert asyncio.all_tasks() == running, "no second settlement started"
    assert client.sent == [ACK]


async def test_heartbeat_runs_until_the_delivery_is_settled(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make()
    await wait_for(lambda: client.sent.count(PROGRESS) >= 2, within=15, what="heartbeats")

    await delivery.settle()

    await wait_for(lambda: not delivery.heartbeat_running, within=15, what="the heartbeat to end")
    beats = client.sent.count(PROGRESS)
    assert client.sent == [PROGRESS] * beats + [ACK]


async def test_heartbeat_stops_at_the_timeout_of_a_task_that_hangs(
    make: MakeDelivery, client: RecordingClient
) -> None:
    delivery = make(timeout=0.5)  # about four beats' worth

    await wait_for(lambda: not delivery.heartbeat_running, within=15, what="the heartbeat to end")

    assert not delivery.settled, "NATS delivers it again after ack_wait"
    assert set(client.sent) == {PROGRESS}
    assert len(client.sent) <= 0.5 / (CONFIG.ack_wait / 3)


async def test_nats_unreachable_while_settling_leaves_the_message_to_redelivery(
    make: MakeDelivery, client: RecordingClient, outcomes: Settlements
) -> None:
    delivery = make()
    client.failing = True

    await delivery.settle()

    assert delivery.settled, "no second try here: NATS delivers it again after ack_wait"
    assert outcomes.settled == [delivery]
    await wait_for(lambda: not delivery.heartbeat_running, within=15, what="the heartbeat to end")
