"""Names and limits of the JetStream queue, derived from the settings."""

from dataclasses import dataclass

from app.settings import NatsSettings, Settings


@dataclass(frozen=True, slots=True)
class QueueConfig:
    url: str
    connect_timeout: int
    # Servers, credentials and TLS: what app.worker.connection connects with.
    connection: NatsSettings
    subject: str
    stream: str
    durable: str
    dead_letter_subject: str
    dead_letter_stream: str
    ack_wait: float
    max_deliver: int
    retry_delay: float
    retry_max_delay: float
    pull_timeout: float
    stream_max_age: int
    dead_letter_max_age: int
    duplicate_window: float
    task_timeout: float
    unknown_task_delay: float
    publish_timeout: float
    # Deliveries one worker process holds at once (received, running or settling).
    concurrency: int
    stream_replicas: int
    max_ack_pending: int
    max_waiting: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "QueueConfig":
        prefix = settings.queue_prefix
        nats = settings.nats
        return cls(
            url=nats.url,
            connect_timeout=nats.connect_timeout,
            connection=nats,
            subject=f"{prefix}.tasks",
            stream=f"{prefix}_tasks",
            durable=f"{prefix}_worker",
            dead_letter_subject=f"{prefix}.dead_letter",
            dead_letter_stream=f"{prefix}_dead_letter",
            ack_wait=nats.ack_wait,
            max_deliver=nats.max_deliver,
            retry_delay=nats.retry_delay,
            retry_max_delay=nats.retry_max_delay,
            pull_timeout=nats.pull_timeout,
            stream_max_age=nats.stream_max_age,
            dead_letter_max_age=nats.dead_letter_max_age,
            duplicate_window=nats.duplicate_window,
            task_timeout=nats.task_timeout,
            unknown_task_delay=nats.unknown_task_delay,
            publish_timeout=nats.publish_timeout,
            concurrency=settings.worker_concurrency,
            stream_replicas=nats.stream_replicas,
            max_ack_pending=nats.max_ack_pending,
            max_waiting=nats.max_waiting,
        )

    def retry_delay_after(self, attempt: int) -> float:
        """Seconds to wait before delivering a failed task again (exponential, capped)."""
        return float(min(self.retry_delay * 2 ** (attempt - 1), self.retry_max_delay))
