"""The TaskIQ broker on NATS JetStream, with the guarantees taskiq-nats's brokers lack.

- At-least-once: a task is acked only after it finished and its unit of work committed. A
  heartbeat (``in_progress``) keeps a running task from being redelivered, up to its timeout.
- Failures of any kind are failures: a task that raises, times out, or whose commit fails is
  delivered again after an exponential delay, and dead-lettered after ``max_deliver`` attempts.
- Nothing is dropped: an unreadable message goes to the dead letters at once, with the reason;
  a task no worker here knows is delivered again later (a newer worker may take it), then
  dead-lettered. A task whose earlier deliveries never ended (it crashed or hung its worker) is
  dead-lettered on receipt, before it runs again: no advisory, no live worker needed at the
  moment it ran out of attempts.
- Names come from the settings (``<prefix>.tasks``, ``<prefix>_tasks``, ``<prefix>_worker``), so
  services, environments and test runs never share a queue.
- Only worker processes create the consumer and pull: the API process only publishes.
- A stream or consumer that exists with other limits than the settings' is updated to them;
  ``max_waiting``, which JetStream cannot update, by recreating the consumer while no task is
  held on it, else startup fails saying what to do.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import nats
import nats.errors
import structlog
import taskiq_fastapi
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError
from starlette.requests import HTTPConnection, Request
from taskiq import (
    AckableMessage,
    AsyncBroker,
    BrokerMessage,
    TaskiqEvents,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqState,
)
from taskiq.abc.serializer import TaskiqSerializer
from taskiq.result import TaskiqResult

from app.core import serialization
from app.core.outbox import single_line
from app.settings import Settings, get_settings
from app.worker.connection import connect
from app.worker.delivery import AckBatch, Delivery
from app.worker.middleware import TaskContextMiddleware
from app.worker.pull import Puller
from app.worker.queue import QueueConfig

log = structlog.get_logger(__name__)

MESSAGE_ID = "Nats-Msg-Id"
# How long the ack of a finished task waits for others to go out with it.
ACK_DELAY = 0.002


class QueueSetupError(RuntimeError):
    """JetStream would not take the stream or consumer the settings ask for."""


class _DeliveryTracker(TaskiqMiddleware):
    """Links taskiq's handling of a message to its delivery: the task's default timeout, the
    asyncio task that handles it, and the error it ended with."""

    def __init__(self, broker: "JetStreamBroker") -> None:
        super().__init__()
        self.tracked = broker

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        message.labels.setdefault("timeout", self.tracked.config.task_timeout)
        # The delivery is settled once the task and its commit are done, never earlier: an
        # ack_type label ("when_received") would ack a task that may still fail.
        message.labels.pop("ack_type", None)
        delivery = self.tracked.deliveries.get(message.task_id)
        if delivery is not None:
            delivery.bind(asyncio.current_task())
        return message

    def on_error(
        self,
        message: TaskiqMessage,
        result: TaskiqResult[Any],  # noqa: ARG002 - Any: every task's result passes through here
        exception: BaseException,
    ) -> None:
        delivery = self.tracked.deliveries.get(message.task_id)
        if delivery is not None:
            delivery.error = f"{type(exception).__name__}: {exception}"


class JetStreamBroker(AsyncBroker):
    """Publishes tasks to a work-queue stream; workers pull them from one durable consumer."""

    def __init__(self) -> None:
        super().__init__()
        self._config: QueueConfig | None = None
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._puller: Puller | None = None
        # Set whenever a delivery is settled: there is room for another one.
        self._room: asyncio.Event | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []
        # The deliveries this process is handling, by task id.
        self.deliveries: dict[str, Delivery] = {}
        self.acks = AckBatch(ACK_DELAY)
        self.add_middlewares(_DeliveryTracker(self))

    def configure(self, settings: Settings) -> None:
        """Use these settings instead of the environment's (call before ``startup``)."""
        self._config = QueueConfig.from_settings(settings)

    @property
    def config(self) -> QueueConfig:
        if self._config is None:
            self._config = QueueConfig.from_settings(get_settings())
        return self._config

    @property
    def queue(self) -> str:
        """The subject tasks are published to (what the outbox records with each task)."""
        return self.config.subject

    @property
    def is_connected(self) -> bool:
        """Whether NATS can take a task right now."""
        return self._client is not None and self._client.is_connected

    @property
    def jetstream(self) -> JetStreamContext:
        if self._js is None:
            msg = "the broker is not started"
            raise RuntimeError(msg)
        return self._js

    def on_reconnect(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` each time the connection to NATS is made or comes back; return
        the function that stops it."""
        self._reconnect_listeners.append(listener)
        return lambda: self._reconnect_listeners.remove(listener)

    async def _reconnected(self) -> None:
        log.info("queue.connected")
        for listener in self._reconnect_listeners:
            listener()

    async def startup(self) -> None:
        """Connect, make sure the streams exist and, in a worker, join the consumer."""
        await super().startup()
        if self._client is not None:  # a retried startup: drop the half-made connection
            await self._client.close()
        config = self.config
        role = "worker" if self.is_worker_process else "producer"
        self._client = await connect(
            config.connection,
            name=f"{config.durable}-{role}",
            max_reconnect_attempts=-1,
            reconnected_cb=self._reconnected,
        )
        self._js = self._client.jetstream()
        await self._ensure_stream(
            StreamConfig(
                name=config.stream,
                subjects=[config.subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                max_age=config.stream_max_age,
                duplicate_window=config.duplicate_window,
                num_replicas=config.stream_replicas,
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=config.dead_letter_stream,
                subjects=[config.dead_letter_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=config.dead_letter_max_age,
                # Dead-lettering again after a crash in between comes an ack_wait later.
                duplicate_window=max(config.duplicate_window, 2 * config.ack_wait),
                num_replicas=config.stream_replicas,
            )
        )
        if self.is_worker_process:
            await self._join_consumer()
        await self._reconnected()

    async def _ensure_stream(self, stream: StreamConfig) -> None:
        """Create the stream, or apply changed limits to an existing one (never ignore them)."""
        assert stream.name is not None  # noqa: S101 - every stream here is named
        try:
            try:
                current = (await self.jetstream.stream_info(stream.name)).config
            except NotFoundError:
                await self.jetstream.add_stream(stream)
                return
            changed = (
                current.subjects != stream.subjects
                or current.max_age != stream.max_age
                or (stream.duplicate_window and current.duplicate_window != stream.duplicate_window)
                # A cluster moves the stream to more or fewer servers; the consumers follow.
                or current.num_replicas != stream.num_replicas
            )
            if changed:
                await self.jetstream.update_stream(stream)
                log.info("queue.stream_updated", stream=stream.name, replicas=stream.num_replicas)
        except APIError as exc:
            if isinstance(exc, NotFoundError):
                raise
            msg = (
                f"JetStream refused the stream {stream.name} with {stream.num_replicas} "
                f"replica(s) (NATS_STREAM_REPLICAS): {exc.description or exc!r}"
            )
            raise QueueSetupError(msg) from exc

    async def _join_consumer(self) -> None:
        config = self.config
        # No max_deliver on the consumer: the worker judges the delivery count itself on
        # receipt, so a task that ran out of attempts is dead-lettered, never left in the stream.
        consumer = ConsumerConfig(
            durable_name=config.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_deliver=-1,
            max_ack_pending=config.max_ack_pending,
            max_waiting=config.max_waiting,
            # No num_replicas: JetStream keeps a work-queue stream's consumer on the stream's
            # servers, and scales it with the stream (an explicit count would be refused while
            # the stream is still growing to it).
        )
        try:
            current = await self.jetstream.consumer_info(config.stream, config.durable)
        except NotFoundError:
            await self.jetstream.add_consumer(config.stream, consumer)
        else:
            found = current.config
            if found.max_waiting != config.max_waiting:
                await self._recreate_consumer(current, consumer)
            elif (found.ack_wait, found.max_deliver, found.max_ack_pending) != (
                config.ack_wait,
                -1,
                config.max_ack_pending,
            ):
                await self.jetstream.add_consumer(config.stream, consumer)  # updates it
                log.info("queue.consumer_updated", consumer=config.durable)
        assert self._client is not None  # noqa: S101 - startup connected it just before
        self._puller = Puller(
            self._client, stream=config.stream, durable=config.durable, timeout=config.pull_timeout
        )
        await self._puller.start()
        # Both belong to this event loop (a timer, an event): made anew by each startup.
        self._room = asyncio.Event()
        self.acks = AckBatch(ACK_DELAY)

    async def _recreate_consumer(self, current: ConsumerInfo, consumer: ConsumerConfig) -> None:
        """Apply a new ``max_waiting``, which JetStream cannot update: delete the consumer and
        create it again, only while no delivery is held or waits for a retry on it (the tasks
        themselves stay in the work-queue stream; the new consumer delivers them from the
        start). Otherwise fail, saying what to do."""
        config = self.config
        held = (current.num_ack_pending or 0) + (current.num_redelivered or 0)
        if held:
            msg = (
                f"NATS_MAX_WAITING changed ({current.config.max_waiting} -> {config.max_waiting}),"
                f" which JetStream cannot change on the consumer {config.durable}; recreating it "
                f"now would redeliver the {held} task(s) workers hold or retry on it. Stop every "
                "worker of this queue, then start them again (the first one recreates the "
                f"consumer), or put NATS_MAX_WAITING back to {current.config.max_waiting}."
            )
            raise QueueSetupError(msg)
        log.warning(
            "queue.consumer_recreated",
            consumer=config.durable,
            max_waiting=config.max_waiting,
            was=current.config.max_waiting,
        )
        # Another worker starting at the same moment may have deleted it already.
        with contextlib.suppress(NotFoundError):
            await self.jetstream.delete_consumer(config.stream, config.durable)
        await self.jetstream.add_consumer(config.stream, consumer)

    async def shutdown(self) -> None:
        await super().shutdown()
        for delivery in list(self.deliveries.values()):
            delivery.cancel()
        await self.acks.flush()
        if self._puller is not None:
            # Arrived after the last pull: back to the queue at once, not after ack_wait.
            for message in await self._puller.stop():
                with contextlib.suppress(nats.errors.Error):
                    await message.nak()
        if self._client is not None:
            await self._client.close()
        self._client = self._js = self._puller = self._room = None

    async def ping(self) -> None:
        """Raise unless NATS is connected and the task stream answers."""
        if not self.is_connected:
            msg = "not connected to NATS"
            raise ConnectionError(msg)
        await self.jetstream.stream_info(self.config.stream)

    async def publish(self, message_id: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish a task under its id; returns once JetStream stored it or dropped it as a
        duplicate of a copy stored within the duplicate window."""
        if not self.is_connected:  # nats-py would buffer it and maybe send it much later
            msg = "not connected to NATS"
            raise ConnectionError(msg)
        await self.jetstream.publish(
            self.config.subject,
            body,
            timeout=self.config.publish_timeout,
            headers={**headers, MESSAGE_ID: message_id},
        )

    async def kick(self, message: BrokerMessage) -> None:
        """Publish a task at once (the scheduler, or a plain ``.kiq()`` outside a unit of work)."""
        headers = {key: single_line(str(value)) for key, value in message.labels.items()}
        await self.publish(message.task_id, message.message, headers)

    async def listen(self) -> AsyncGenerator[bytes | AckableMessage]:
        """Take as many tasks as there is room for (``concurrency`` deliveries at once), in one
        pull; wait for the next one when there are none; a bounded wait keeps shutdown and
        reconnects prompt."""
        if self._puller is None:
            msg = "only a worker process listens (taskiq worker)"
            raise RuntimeError(msg)
        ready: deque[tuple[Msg, Delivery]] = deque()
        try:
            while True:
                while not ready:
                    await self._take(self._puller, ready)
                message, delivery = ready.popleft()
                yield AckableMessage(data=message.data, ack=delivery.settle)
        finally:
            # Taken but never handed to taskiq (shutdown): back to the queue at once.
            for _, delivery in ready:
                await delivery.release()

    async def _take(self, puller: Puller, ready: deque[tuple[Msg, Delivery]]) -> None:
        """Pull what there is room for into ``ready``; wait when there is no room or no task."""
        config = self.config
        room = config.concurrency - len(self.deliveries)
        if room <= 0 and self._room is not None:
            self._room.clear()
            await self._room.wait()
            return
        # The acks waiting for their batch go out in the same write as the pull request.
        await self.acks.flush()
        try:
            messages = await puller.pull(room)
            if not messages:
                messages = await puller.pull(1, wait=config.pull_timeout)
        except nats.errors.Error as exc:
            # Disconnected: nats-py reconnects by itself; ask again once it may have.
            log.warning("queue.fetch_failed", error=repr(exc))
            await asyncio.sleep(config.pull_timeout)
            return
        for message in messages:
            try:
                delivery = await self._receive(message)
            except nats.errors.Error as exc:
                # A NAK or dead letter that did not reach NATS: it redelivers the message.
                log.warning("task.receive_failed", error=repr(exc))
                continue
            if delivery is not None:
                ready.append((message, delivery))

    async def _receive(self, message: Msg) -> Delivery | None:
        """Check a delivery before taskiq runs it; settle it here when it must not run."""
        config = self.config
        attempt = message.metadata.num_delivered
        try:
            parsed = self.formatter.loads(message=message.data)
            parsed.parse_labels()
            # A timeout that is no number fails every run, and here it would end the listener.
            timeout = float(parsed.labels.get("timeout", config.task_timeout))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, no worker can read it
            await self.dead_letter(message, "unreadable", f"{type(exc).__name__}: {exc}")
            return None
        if attempt > config.max_deliver:
            error = (
                f"delivered {attempt} times; the earlier deliveries ended without a result "
                "(the worker crashed, was killed, or the task hung past its timeout)"
            )
            await self.dead_letter(message, "abandoned", error)
            return None
        if self.find_task(parsed.task_name) is None:
            if attempt >= config.max_deliver:
                error = f"no worker knows the task {parsed.task_name!r}"
                await self.dead_letter(message, "unknown_task", error)
            else:
                log.warning(
                    "task.unknown",
                    task_name=parsed.task_name,
                    attempt=attempt,
                    retry_in=config.unknown_task_delay,
                )
                await message.nak(delay=config.unknown_task_delay)
            return None
        if parsed.task_id in self.deliveries:
            # The same task is being handled here right now: let that finish first.
            await message.nak(delay=config.retry_delay)
            return None
        delivery = Delivery(
            message,
            task_id=parsed.task_id,
            task_name=parsed.task_name,
            timeout=timeout,
            config=config,
            dead_letter=self.dead_letter,
            on_settled=self._forget,
            ack=self.acks.ack,
        )
        self.deliveries[parsed.task_id] = delivery
        return delivery

    def _forget(self, delivery: Delivery) -> None:
        if self.deliveries.get(delivery.task_id) is delivery:
            del self.deliveries[delivery.task_id]
        if self._room is not None:
            self._room.set()

    async def dead_letter(self, message: Msg, reason: str, error: str) -> None:
        """Keep a task that will not be delivered again, with why, in the dead-letter stream;
        then remove it from the work queue."""
        config = self.config
        deliveries = message.metadata.num_delivered
        sequence = message.metadata.sequence.stream
        annotated = {k: v for k, v in (message.headers or {}).items() if k != MESSAGE_ID}
        annotated.update(
            {
                "Dead-Letter-Reason": reason,
                "Dead-Letter-Error": single_line(error),
                "Dead-Letter-Deliveries": str(deliveries),
                # A second dead-lettering of the same message (a crash in between) is dropped.
                MESSAGE_ID: f"{config.stream}:{sequence}",
            }
        )
        await self.jetstream.publish(
            config.dead_letter_subject,
            message.data,
            timeout=config.publish_timeout,
            headers=annotated,
        )
        await message.term()
        log.error("task.dead_lettered", reason=reason, error=error, deliveries=deliveries)


async def _fastapi_dependencies_as_context(_state: TaskiqState) -> None:
    """Give tasks taskiq-fastapi's Request as a ready value, not as an override.

    taskiq-fastapi provides ``Request`` through ``dependency_overrides``, and taskiq rebuilds a
    task's whole dependency graph (signatures, type hints) on every run while any override is
    set. One Request in the dependency context resolves the same way, graph built once. Tasks
    share it: they read the app's state through it (``request.app.state``); a task must not
    keep anything of its own in ``request.state``.
    """
    overrides = broker.dependency_overrides
    broker.add_dependency_context(
        {kind: overrides.pop(kind)() for kind in (Request, HTTPConnection) if kind in overrides}
    )


RECEIVER_LOGGER = "taskiq.receiver.receiver"


class JSONSerializer(TaskiqSerializer):
    """Task messages as JSON through ``app.core.serialization`` (orjson): taskiq's default
    serializer uses the standard library's, several times slower for a task's message."""

    # TaskiqSerializer's signature: a message of any shape the formatter made.
    def dumpb(self, value: Any) -> bytes:
        return serialization.dumpb(value)

    def loadb(self, value: bytes) -> Any:
        return serialization.loads(value)


broker = (
    JetStreamBroker().with_serializer(JSONSerializer()).with_middlewares(TaskContextMiddleware())
)
# Workers run the FastAPI app's lifespan, so tasks share its dependencies (the session factory).
taskiq_fastapi.init(broker, "app.main:create_app")
# After taskiq-fastapi's handler, which sets the overrides.
broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, _fastapi_dependencies_as_context)
# taskiq's receiver logs "Executing task" at INFO for every task: ``task.started`` says the same
# with more context. Its level, not a filter, drops it, so no record is built for each task (a
# filter runs after the record is made); its two other INFO lines ("Listening started.", on stop)
# go with it, its warnings and errors stay.
logging.getLogger(RECEIVER_LOGGER).setLevel(logging.WARNING)
