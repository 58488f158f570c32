"""A consumer that exists with other limits than the settings' is changed, never reused as is.

``max_ack_pending`` is updated in place; ``max_waiting``, which JetStream refuses to update, by
recreating the consumer while no task is held on it, and refused with what to do otherwise.
(Stream replicas are changed on a real cluster: tests/worker/test_nats_cluster.py.)
"""

import uuid

import pytest
from nats.js.api import ConsumerInfo

from app.settings import Settings
from app.worker.broker import JetStreamBroker, QueueSetupError
from tests.helpers import worker_broker


def _with(settings: Settings, **nats: object) -> Settings:
    return settings.model_copy(update={"nats": settings.nats.model_copy(update=nats)})


async def _consumer(worker: JetStreamBroker) -> ConsumerInfo:
    info: ConsumerInfo = await worker.jetstream.consumer_info(
        worker.config.stream, worker.config.durable
    )
    return info


async def test_max_ack_pending_is_updated_in_place(fresh_queue: Settings) -> None:
    async with worker_broker(_with(fresh_queue, max_ack_pending=100, max_waiting=10)) as first:
        before = await _consumer(first)
        assert (before.config.max_ack_pending, before.config.max_waiting) == (100, 10)

    async with worker_broker(_with(fresh_queue, max_ack_pending=200, max_waiting=10)) as second:
        after = await _consumer(second)

    assert (after.config.max_ack_pending, after.config.max_waiting) == (200, 10)
    assert after.created == before.created  # the same consumer


async def test_max_waiting_recreates_an_idle_consumer_and_keeps_its_tasks(
    fresh_queue: Settings,
) -> None:
    async with worker_broker(_with(fresh_queue, max_waiting=10)) as first:
        before = await _consumer(first)
        await first.publish(f"h-{uuid.uuid4()}", b"{}", {})

    async with worker_broker(_with(fresh_queue, max_waiting=20)) as second:
        after = await _consumer(second)
        # Taken by the new consumer: the task waited in the work-queue stream meanwhile.
        taker = await second.jetstream.pull_subscribe_bind(
            second.config.durable, second.config.stream
        )
        (message,) = await taker.fetch(1)
        await message.ack_sync()
        await taker.unsubscribe()

    assert after.config.max_waiting == 20
    assert after.created > before.created  # a new consumer
    assert after.num_pending == 1
    assert message.metadata.num_delivered == 1


async def test_max_waiting_is_not_changed_under_a_held_task(fresh_queue: Settings) -> None:
    old = _with(fresh_queue, max_waiting=10)
    async with worker_broker(old) as first:
        await first.publish(f"h-{uuid.uuid4()}", b"{}", {})
        holder = await first.jetstream.pull_subscribe_bind(
            first.config.durable, first.config.stream
        )
        (held,) = await holder.fetch(1)

        # Another worker comes up with another max_waiting while the task is held.
        with pytest.raises(QueueSetupError, match=r"NATS_MAX_WAITING changed \(10 -> 20\)"):
            async with worker_broker(_with(fresh_queue, max_waiting=20)):
                pass
        unchanged = await _consumer(first)
        assert unchanged.config.max_waiting == 10
        assert unchanged.num_ack_pending == 1

        await held.ack_sync()
        await holder.unsubscribe()
    async with worker_broker(_with(fresh_queue, max_waiting=20)) as second:
        assert (await _consumer(second)).config.max_waiting == 20
