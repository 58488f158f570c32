"""Pull requests and batched acks against a real JetStream consumer of the test's own."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from app.worker.delivery import AckBatch
from app.worker.pull import Puller, PullRefusedError
from tests.processes import wait_for


@dataclass
class Consumer:
    client: Client
    jetstream: JetStreamContext
    stream: str
    subject: str
    durable: str

    async def publish(self, count: int) -> None:
        for number in range(count):
            await self.jetstream.publish(self.subject, str(number).encode())

    async def ack_pending(self) -> int:
        info = await self.jetstream.consumer_info(self.stream, self.durable)
        pending: int = info.num_ack_pending  # Any in nats-py's annotations
        return pending


@pytest.fixture
async def consumer(nats_url: str) -> AsyncIterator[Consumer]:
    """A work-queue stream and a durable pull consumer, deleted afterwards."""
    client = await nats.connect(nats_url)
    jetstream = client.jetstream()
    stream = f"test_pull_{uuid.uuid4().hex[:10]}"
    subject = f"{stream}.tasks"
    await jetstream.add_stream(
        StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE)
    )
    await jetstream.add_consumer(
        stream, ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    )
    try:
        yield Consumer(client, jetstream, stream, subject, "worker")
    finally:
        with contextlib.suppress(NotFoundError):
            await jetstream.delete_stream(stream)
        await client.close()


@pytest.fixture
async def puller(consumer: Consumer) -> AsyncIterator[Puller]:
    pull = Puller(consumer.client, stream=consumer.stream, durable=consumer.durable, timeout=5)
    await pull.start()
    try:
        yield pull
    finally:
        await pull.stop()


async def test_pull_takes_what_is_there_up_to_the_batch_without_waiting(
    consumer: Consumer, puller: Puller
) -> None:
    await consumer.publish(5)

    first = await puller.pull(3)
    second = await puller.pull(10)
    started = time.monotonic()
    third = await puller.pull(10)

    assert [m.data for m in first] == [b"0", b"1", b"2"]
    assert [m.data for m in second] == [b"3", b"4"]
    assert third == []
    assert time.monotonic() - started < 1, "an empty queue answers at once"
    assert await consumer.ack_pending() == 5, "pulled, not acked"


async def test_waiting_pull_returns_a_task_as_soon_as_it_is_published(
    consumer: Consumer, puller: Puller
) -> None:
    waiting = asyncio.create_task(puller.pull(1, wait=10))
    await wait_for(lambda: _waiting_requests(consumer), what="the pull request to wait")
    started = time.monotonic()

    await consumer.publish(1)
    [message] = await waiting

    assert message.data == b"0"
    assert time.monotonic() - started < 5, "not held until the request expires"


async def test_waiting_pull_ends_empty_when_nothing_comes(puller: Puller) -> None:
    started = time.monotonic()

    assert await puller.pull(1, wait=0.3) == []
    assert 0.25 < time.monotonic() - started < 5


async def test_pull_that_jetstream_refuses_is_an_error_not_an_empty_queue(
    consumer: Consumer, puller: Puller
) -> None:
    # One waiting request at most: a second one is refused (409 Exceeded MaxWaiting).
    await consumer.jetstream.delete_consumer(consumer.stream, consumer.durable)
    await consumer.jetstream.add_consumer(
        consumer.stream,
        ConsumerConfig(durable_name=consumer.durable, ack_policy=AckPolicy.EXPLICIT, max_waiting=1),
    )
    waiting = asyncio.create_task(puller.pull(1, wait=10))
    await wait_for(lambda: _waiting_requests(consumer), what="the first request to wait")
    other = Puller(consumer.client, stream=consumer.stream, durable=consumer.durable, timeout=5)
    await other.start()
    try:
        with pytest.raises(PullRefusedError, match="409"):
            await other.pull(1, wait=10)
    finally:
        await other.stop()
        waiting.cancel()


@pytest.mark.slow
async def test_pull_nobody_answers_ends_after_its_timeout(consumer: Consumer) -> None:
    await consumer.jetstream.delete_consumer(consumer.stream, consumer.durable)
    orphan = Puller(consumer.client, stream=consumer.stream, durable=consumer.durable, timeout=0.2)
    await orphan.start()
    started = time.monotonic()
    try:
        # Servers before 2.10 never answer a pull for a consumer that is gone; later ones answer
        # 503 (no responders), which the puller reports as refused. Either way, promptly.
        with contextlib.suppress(PullRefusedError):
            assert await orphan.pull(5) == []
    finally:
        await orphan.stop()

    assert time.monotonic() - started < 5, "a request nobody answers never hangs the worker"


async def test_acks_go_out_together_after_the_delay(consumer: Consumer, puller: Puller) -> None:
    await consumer.publish(4)
    messages = await puller.pull(4)
    batch = AckBatch(delay=0.2)

    for message in messages:
        await batch.ack(message)

    assert batch.waiting == 4
    assert await consumer.ack_pending() == 4, "held for the delay"
    await wait_for(lambda: batch.waiting == 0, what="the batch to go out")
    await wait_for(lambda: _nothing_pending(consumer), what="JetStream to take the acks")


async def test_flush_sends_the_waiting_acks_at_once(consumer: Consumer, puller: Puller) -> None:
    await consumer.publish(2)
    messages = await puller.pull(2)
    batch = AckBatch(delay=3600)
    for message in messages:
        await batch.ack(message)

    await batch.flush()

    assert batch.waiting == 0
    await wait_for(lambda: _nothing_pending(consumer), what="JetStream to take the acks")


async def _waiting_requests(consumer: Consumer) -> bool:
    info = await consumer.jetstream.consumer_info(consumer.stream, consumer.durable)
    return (info.num_waiting or 0) > 0


async def _nothing_pending(consumer: Consumer) -> bool:
    return await consumer.ack_pending() == 0


async def test_pull_while_disconnected_is_an_error_not_a_request_for_later(
    consumer: Consumer, nats_url: str
) -> None:
    client = await nats.connect(nats_url)
    pull = Puller(client, stream=consumer.stream, durable=consumer.durable, timeout=5)
    await pull.start()
    await client.close()

    with pytest.raises(nats.errors.Error):
        await pull.pull(1, wait=1)
