"""What JetStream holds of a test queue: its dead letters, and what is left to deliver."""

import contextlib
import json

from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from app.worker.broker import JetStreamBroker


async def dead_letters(
    broker: JetStreamBroker, after: int = 0
) -> list[tuple[dict[str, str], bytes]]:
    """Every message in the dead-letter stream (past sequence ``after``), with its headers."""
    config = broker.config
    info = await broker.jetstream.stream_info(config.dead_letter_stream)
    if not info.state.messages:
        return []
    found = []
    for sequence in range(max(info.state.first_seq, after + 1), info.state.last_seq + 1):
        stored = await broker.jetstream.get_msg(config.dead_letter_stream, sequence)
        found.append((dict(stored.headers or {}), stored.data or b""))
    return found


async def last_dead_letter(broker: JetStreamBroker) -> int:
    """The sequence of the newest dead letter (0: none yet): what a test on a shared queue passes
    as ``after`` to see only the dead letters that came later."""
    info = await broker.jetstream.stream_info(broker.config.dead_letter_stream)
    return info.state.last_seq


async def has_dead_letter(broker: JetStreamBroker, after: int = 0) -> bool:
    """Whether a dead letter came after sequence ``after``."""
    return await last_dead_letter(broker) > after


async def dead_letter_of(broker: JetStreamBroker, task_id: str) -> dict[str, str] | None:
    """The headers of the task's dead letter, if it has one."""
    for headers, body in await dead_letters(broker):
        with contextlib.suppress(ValueError):  # an unreadable body is no task's
            if json.loads(body).get("task_id") == task_id:
                return headers
    return None


async def consumer(broker: JetStreamBroker) -> ConsumerInfo:
    """The workers' consumer as JetStream sees it."""
    info: ConsumerInfo = await broker.jetstream.consumer_info(
        broker.config.stream, broker.config.durable
    )
    return info


async def joined(broker: JetStreamBroker) -> bool:
    """Whether a worker is pulling from the consumer."""
    try:
        info = await consumer(broker)
    except NotFoundError:
        return False
    return int(info.num_waiting or 0) > 0


async def delivered_up_to(broker: JetStreamBroker) -> int:
    """The stream sequence of the last message the consumer delivered (0: none yet)."""
    delivered = (await consumer(broker)).delivered
    return delivered.stream_seq if delivered is not None else 0


async def settled(broker: JetStreamBroker) -> bool:
    """Whether every task sent was settled: nothing left in the work queue, nothing waiting for
    a first delivery, nothing delivered and unacknowledged (a heartbeat would keep it so)."""
    stream = await broker.jetstream.stream_info(broker.config.stream)
    try:
        info = await consumer(broker)
    except NotFoundError:  # no worker joined yet
        return False
    return (stream.state.messages, info.num_pending, info.num_ack_pending) == (0, 0, 0)
