"""The TaskIQ broker on NATS JetStream, with the guarantees taskiq-nats's brokers lack.

- At-least-once: a task is acked only after it finished; a crash means redelivery after
  ``ack_wait``, and a heartbeat (``in_progress``) keeps a long task from being redelivered while it
  still runs.
- A task that raises is delivered again after an exponential delay (NAK with delay), up to
  ``max_deliver`` deliveries; then it is copied to the dead-letter stream with its error. A task
  that keeps crashing its worker reaches ``max_deliver`` too: NATS announces it and one worker
  copies it to the dead-letter stream.
- Names come from the settings (``<prefix>.tasks``, ``<prefix>_tasks``, ``<prefix>_worker``), so
  services, environments and test runs never share a queue.
- Only worker processes create the consumer and pull: the API process only publishes.
"""

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import nats
import nats.errors
import structlog
import taskiq_fastapi
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, TaskiqMessage, TaskiqMiddleware
from taskiq.result import TaskiqResult

from app.settings import Settings, get_settings
from app.worker.middleware import TaskContextMiddleware
from app.worker.queue import QueueConfig

log = structlog.get_logger(__name__)


def _header_value(text: str, limit: int = 1000) -> str:
    # NATS header values are single lines.
    return " ".join(text.split())[:limit]


class _FailureRecorder(TaskiqMiddleware):
    """Remembers which tasks raised, so settling their message can retry or dead-letter them."""

    def __init__(self, failures: dict[str, str]) -> None:
        super().__init__()
        self.failures = failures

    def on_error(
        self,
        message: TaskiqMessage,
        result: TaskiqResult[Any],  # noqa: ARG002 - Any: every task's result passes through here
        exception: BaseException,
    ) -> None:
        self.failures[message.task_id] = f"{type(exception).__name__}: {exception}"


class JetStreamBroker(AsyncBroker):
    """Publishes tasks to a work-queue stream; workers pull them from one durable consumer."""

    def __init__(self) -> None:
        super().__init__()
        self._config: QueueConfig | None = None
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._failures: dict[str, str] = {}
        self.add_middlewares(_FailureRecorder(self._failures))

    def configure(self, settings: Settings) -> None:
        """Use these settings instead of the environment's (call before ``startup``)."""
        self._config = QueueConfig.from_settings(settings)

    @property
    def config(self) -> QueueConfig:
        if self._config is None:
            self._config = QueueConfig.from_settings(get_settings())
        return self._config

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

    async def startup(self) -> None:
        """Connect, make sure the streams exist and, in a worker, join the consumer."""
        await super().startup()
        if self._client is not None:  # a retried startup: drop the half-made connection
            await self._client.close()
        config = self.config
        role = "worker" if self.is_worker_process else "producer"
        self._client = await nats.connect(
            config.url,
            name=f"{config.durable}-{role}",
            connect_timeout=config.connect_timeout,
            max_reconnect_attempts=-1,
        )
        self._js = self._client.jetstream()
        await self._ensure_stream(
            StreamConfig(
                name=config.stream,
                subjects=[config.subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                max_age=config.stream_max_age,
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=config.dead_letter_stream,
                subjects=[config.dead_letter_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=config.dead_letter_max_age,
            )
        )
        if self.is_worker_process:
            await self._join_consumer()

    async def _ensure_stream(self, stream: StreamConfig) -> None:
        """Create the stream, or apply changed limits to an existing one (never ignore them)."""
        assert stream.name is not None  # noqa: S101 - every stream here is named
        try:
            current = (await self.jetstream.stream_info(stream.name)).config
        except NotFoundError:
            await self.jetstream.add_stream(stream)
            return
        if current.subjects != stream.subjects or current.max_age != stream.max_age:
            await self.jetstream.update_stream(stream)

    async def _join_consumer(self) -> None:
        config = self.config
        await self.jetstream.add_consumer(
            config.stream,
            ConsumerConfig(
                durable_name=config.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=config.ack_wait,
                max_deliver=config.max_deliver,
            ),
        )
        self._subscription = await self.jetstream.pull_subscribe(
            config.subject, durable=config.durable, stream=config.stream
        )
        assert self._client is not None  # noqa: S101 - set by startup just before
        # A queue group: exactly one worker copies each exhausted task to the dead letters.
        await self._client.subscribe(
            config.max_deliveries_advisory,
            queue=f"{config.durable}_dead_letters",
            cb=self._on_max_deliveries,
        )

    async def shutdown(self) -> None:
        await super().shutdown()
        if self._client is not None:
            await self._client.close()
        self._client = self._js = self._subscription = None

    async def ping(self) -> None:
        """Raise unless NATS is connected and the task stream answers."""
        if not self.is_connected:
            msg = "not connected to NATS"
            raise ConnectionError(msg)
        await self.jetstream.stream_info(self.config.stream)

    async def kick(self, message: BrokerMessage) -> None:
        """Publish a task; returns once JetStream has stored it."""
        headers = {key: _header_value(str(value)) for key, value in message.labels.items()}
        await self.jetstream.publish(self.config.subject, message.message, headers=headers)

    async def listen(self) -> AsyncGenerator[bytes | AckableMessage]:
        """Pull one task at a time; a bounded wait keeps shutdown and reconnects prompt."""
        if self._subscription is None:
            msg = "only a worker process listens (taskiq worker)"
            raise RuntimeError(msg)
        while True:
            try:
                messages = await self._subscription.fetch(1, timeout=self.config.pull_timeout)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as exc:
                # Disconnected: nats-py reconnects by itself; ask again once it may have.
                log.warning("queue.fetch_failed", error=repr(exc))
                await asyncio.sleep(self.config.pull_timeout)
                continue
            for message in messages:
                yield AckableMessage(data=message.data, ack=self._settlement(message))

    def _settlement(self, message: Msg) -> Callable[[], Awaitable[None]]:
        """The callback taskiq runs when the task finished: ack, retry later, or dead-letter."""
        task_id, task_name = self._identify(message.data)
        heartbeat = asyncio.create_task(self._keep_alive(message))

        async def settle() -> None:
            heartbeat.cancel()
            error = self._failures.pop(task_id, None)
            if error is None:
                await message.ack()
                return
            attempt = message.metadata.num_delivered
            if attempt < self.config.max_deliver:
                delay = self.config.retry_delay_after(attempt)
                log.warning(
                    "task.retry_scheduled", task_name=task_name, attempt=attempt, delay=delay
                )
                await message.nak(delay=delay)
                return
            await self.dead_letter(
                message.data, message.headers, reason="failed", error=error, deliveries=attempt
            )
            await message.term()

        return settle

    def _identify(self, data: bytes) -> tuple[str, str]:
        try:
            parsed = self.formatter.loads(message=data)
        except Exception:  # noqa: BLE001 - taskiq itself reports unreadable messages
            return "", ""
        return parsed.task_id, parsed.task_name

    async def _keep_alive(self, message: Msg) -> None:
        """Tell NATS the task is still running, well within each ``ack_wait``."""
        while True:
            await asyncio.sleep(self.config.ack_wait / 3)
            try:
                await message.in_progress()
            except nats.errors.Error as exc:
                log.warning("task.heartbeat_failed", error=repr(exc))

    async def dead_letter(
        self,
        data: bytes,
        headers: Mapping[str, str] | None,
        *,
        reason: str,
        error: str,
        deliveries: int,
    ) -> None:
        """Keep a task that will not be delivered again, with why, in the dead-letter stream."""
        annotated = dict(headers or {})
        annotated.update(
            {
                "Dead-Letter-Reason": reason,
                "Dead-Letter-Error": _header_value(error),
                "Dead-Letter-Deliveries": str(deliveries),
            }
        )
        await self.jetstream.publish(self.config.dead_letter_subject, data, headers=annotated)
        log.error("task.dead_lettered", reason=reason, error=error, deliveries=deliveries)

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        event = json.loads(advisory.data)
        sequence = int(event["stream_seq"])
        stored = await self.jetstream.get_msg(self.config.stream, sequence)
        await self.dead_letter(
            stored.data or b"",
            stored.headers,
            reason="max_deliveries",
            error=(
                f"delivered {event['deliveries']} times without an ack: the worker crashed or "
                "the task outran ack_wait"
            ),
            deliveries=int(event["deliveries"]),
        )
        await self.jetstream.delete_msg(self.config.stream, sequence)


broker = JetStreamBroker().with_middlewares(TaskContextMiddleware())
# Workers run the FastAPI app's lifespan, so tasks share its dependencies (the session factory).
taskiq_fastapi.init(broker, "app.main:create_app")
