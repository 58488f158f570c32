"""The worker's readiness probe, against the real NATS and PostgreSQL."""

import asyncio

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from app.settings import Settings
from app.worker.broker import JetStreamBroker
from app.worker.probe import main
from devtools.embedded import free_port


async def test_ready_when_nats_the_consumer_and_the_database_answer(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    config = producer.config
    await producer.jetstream.add_consumer(
        config.stream, ConsumerConfig(durable_name=config.durable, ack_policy=AckPolicy.EXPLICIT)
    )

    assert await _probe(fresh_queue) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("producer")
async def test_not_ready_before_a_worker_made_its_consumer(
    fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _probe(fresh_queue) == 1
    assert f"no consumer {fresh_queue.queue_prefix}_worker" in capsys.readouterr().err


async def test_not_ready_without_nats(
    fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    offline = fresh_queue.model_copy(
        update={
            "nats": fresh_queue.nats.model_copy(update={"url": f"nats://127.0.0.1:{free_port()}"})
        }
    )

    assert await _probe(offline) == 1
    assert "not ready: nats:" in capsys.readouterr().err


async def _probe(settings: Settings) -> int:
    # main() runs its own event loop; give it a thread of its own, as a separate process would.
    return await asyncio.to_thread(main, [], settings)
