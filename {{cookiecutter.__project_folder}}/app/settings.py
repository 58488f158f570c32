"""Configuration from the environment (and ``.env``), one nested model per concern.

Each concern reads its own prefix, so the plain variable names stay short and conventional:
``DATABASE_URL``, ``NATS_URL``, ``LOG_LEVEL``, ``ENVIRONMENT``.
"""

from enum import StrEnum
from functools import lru_cache
from typing import Literal, Self

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The only line rendered by the template: everything else derives from it.
SERVICE_NAME = "{{ cookiecutter.__snake_name }}"

# An nkey seed of a NATS user: 58 characters starting "SU".
NKEY_SEED_LENGTH = 58


class Environment(StrEnum):
    """Where the service runs; production turns on the strict checks."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # A bad value must not print the other inputs (a database password) in the error.
        hide_input_in_errors=True,
    )


class DatabaseSettings(BaseSettings):
    """PostgreSQL through asyncpg (``DATABASE_*``)."""

    model_config = _config("DATABASE_")

    url: SecretStr = SecretStr(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{SERVICE_NAME}")
    # Size the pool for the concurrency of one process; an overflow connection that is opened and
    # closed on every burst costs more than it saves.
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=0, ge=0, le=200)
    pool_timeout: float = Field(default=10.0, gt=0)
    echo: bool = False
    # Seconds a statement may run, and may wait for a lock, on every API and worker connection
    # (0: no limit). A request that hits either gets a 503 with Retry-After, not a hung worker.
    statement_timeout: float = Field(default=30.0, ge=0, le=86400)
    lock_timeout: float = Field(default=5.0, ge=0, le=3600)
    # How long a migration waits for a lock before it fails: a migration queued behind a long
    # transaction would otherwise block every query queued behind it (0: no limit).
    migration_lock_timeout: float = Field(default=5.0, ge=0, le=3600)
    # A request that hits a serialization failure or a deadlock runs again, at most this many
    # times in all, after a random delay of up to retry_delay * 2^(attempt-1) (retry_max_delay
    # at most); a body larger than retry_max_body bytes is not kept for a replay.
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_delay: float = Field(default=0.05, gt=0, le=10)
    retry_max_delay: float = Field(default=1.0, gt=0, le=60)
    retry_max_body: int = Field(default=1024 * 1024, ge=0)
    # The Retry-After (seconds) of a 503 caused by the database (busy, timed out, unreachable).
    retry_after: int = Field(default=1, ge=1, le=3600)


class NatsSettings(BaseSettings):
    """NATS JetStream, the task queue (``NATS_*``)."""

    model_config = _config("NATS_")

    # One server, or several of one cluster separated by commas: a client connects to any of them
    # (and to the others the cluster announces) and moves to another when its server goes away.
    url: str = "nats://127.0.0.1:4222"
    connect_timeout: int = Field(default=2, ge=1, le=60)
    # Stream, subject and consumer names start with this; default: "<service>_<environment>", so
    # two services or environments never share a queue.
    queue_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # How long a worker may hold a task without acking or a heartbeat before NATS redelivers it.
    ack_wait: float = Field(default=30.0, ge=1, le=3600)
    # Deliveries of one task at most (first run, retries and redeliveries after crashes).
    max_deliver: int = Field(default=5, ge=1, le=100)
    # Retry delays after a failure: retry_delay * 2^(attempt-1), at most retry_max_delay.
    retry_delay: float = Field(default=1.0, gt=0, le=3600)
    retry_max_delay: float = Field(default=60.0, gt=0, le=86400)
    # How long one pull waits for tasks; bounds shutdown and reconnect times of idle workers.
    pull_timeout: float = Field(default=2.0, gt=0, le=60)
    stream_max_age: int = Field(default=7 * 24 * 3600, ge=60)
    dead_letter_max_age: int = Field(default=30 * 24 * 3600, ge=60)
    # JetStream drops a message whose Nats-Msg-Id it stored within this many seconds. The outbox
    # publishes each task with its id, so it must cover the outbox's longest retry (see README).
    duplicate_window: float = Field(default=600.0, ge=10, le=86400)
    # Longest run of a task, unless the task sets its own (`@broker.task(timeout=...)`); the
    # heartbeat that keeps a running task from being redelivered stops at this limit too.
    task_timeout: float = Field(default=300.0, gt=0, le=86400)
    # A task no worker knows yet (a producer deployed before the workers) is delivered again
    # after this many seconds, up to max_deliver times, then dead-lettered.
    unknown_task_delay: float = Field(default=60.0, gt=0, le=3600)
    # How long a publish waits for JetStream's acknowledgement.
    publish_timeout: float = Field(default=2.0, gt=0, le=60)
    # Copies of the task and dead-letter streams (and of the consumer) a cluster keeps: 3 survives
    # the loss of one server; 1 on a single server. An existing stream is scaled to this.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # Deliveries the consumer lets all workers hold at once (received, running, settling, or held
    # by a worker that died, until ack_wait). Each worker process holds WORKER_CONCURRENCY at
    # most: the default leaves room for 100 processes of 10; past it, workers wait for room.
    max_ack_pending: int = Field(default=1000, ge=1, le=1_000_000)
    # Pull requests the consumer keeps waiting at once: a worker process has one outstanding,
    # plus one it gave up on until it expires (pull_timeout). 512, the server's own default,
    # fits 256 worker processes. JetStream cannot change it on an existing consumer (see README).
    max_waiting: int = Field(default=512, ge=1, le=100_000)
    # Credentials, one way at most: a creds file (JWT and nkey seed, from `nsc`), an nkey seed,
    # a user and password, or a token. Credentials in the URL count as user/password or token.
    creds_file: FilePath | None = None
    nkey_seed: SecretStr | None = None
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    # TLS: the CA that signed the servers' certificates (default: the system's), and a client
    # certificate with its key for servers that verify clients (both or neither). TLS is used
    # when the server requires it; set these to trust its certificate and to present one.
    tls_ca_file: FilePath | None = None
    tls_cert_file: FilePath | None = None
    tls_key_file: FilePath | None = None

    @field_validator(
        "creds_file",
        "nkey_seed",
        "user",
        "password",
        "token",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `NATS_USER=` in a .env file means "no user", as an absent line does.
        return None if value == "" else value

    @field_validator("url")
    @classmethod
    def _servers_are_named(cls, value: str) -> str:
        if not all(part.strip() for part in value.split(",")):
            msg = "NATS_URL must be one URL or several separated by commas, none of them empty"
            raise ValueError(msg)
        return value

    @field_validator("nkey_seed")
    @classmethod
    def _nkey_seed_is_a_user_seed(cls, value: SecretStr | None) -> SecretStr | None:
        # The value itself is never echoed.
        seed = value.get_secret_value() if value is not None else None
        if seed is not None and not (seed.startswith("SU") and len(seed) == NKEY_SEED_LENGTH):
            msg = "NATS_NKEY_SEED must be a user's nkey seed (58 characters starting with SU)"
            raise ValueError(msg)
        return value

    @property
    def servers(self) -> list[str]:
        """The server URLs of ``url``, in order."""
        return [part.strip() for part in self.url.split(",")]

    @property
    def has_url_credentials(self) -> bool:
        """Whether a server URL carries a user (and password) or a token itself."""
        return any("@" in server.split("//", 1)[-1] for server in self.servers)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        if (self.user is None) != (self.password is None):
            msg = "NATS_USER and NATS_PASSWORD go together: set both or neither"
            raise ValueError(msg)
        ways = [
            name
            for name, given in (
                ("NATS_CREDS_FILE", self.creds_file is not None),
                ("NATS_NKEY_SEED", self.nkey_seed is not None),
                ("NATS_USER/NATS_PASSWORD", self.user is not None),
                ("NATS_TOKEN", self.token is not None),
                ("credentials in NATS_URL", self.has_url_credentials),
            )
            if given
        ]
        if len(ways) > 1:
            msg = f"NATS credentials must be given one way, not {' and '.join(ways)}"
            raise ValueError(msg)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            msg = "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together: set both or neither"
            raise ValueError(msg)
        return self


class OutboxSettings(BaseSettings):
    """The transactional outbox and its relay (``OUTBOX_*``)."""

    model_config = _config("OUTBOX_")

    # Every process with the app's lifespan (API and workers) relays; turn it off per process.
    relay_enabled: bool = True
    # Seconds between two looks at the outbox (a reconnect to NATS wakes the relay at once).
    relay_interval: float = Field(default=2.0, gt=0, le=300)
    # Rows younger than this belong to the fast path of the process that wrote them.
    relay_min_age: float = Field(default=5.0, ge=0, le=300)
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    # After a failed publish, a row waits retry_delay * 2^(attempts-1) seconds, at most the max.
    retry_delay: float = Field(default=1.0, gt=0, le=3600)
    retry_max_delay: float = Field(default=60.0, gt=0, le=3600)


class WorkerSettings(BaseSettings):
    """Task workers (``WORKER_*``)."""

    model_config = _config("WORKER_")

    # Tasks one worker process runs at once. Default: as many as its connection pool serves
    # without waiting, DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW, less one for the outbox's
    # background work; a larger value is refused (see Settings.worker_concurrency).
    concurrency: int | None = Field(default=None, ge=1, le=1000)


class IdempotencySettings(BaseSettings):
    """Idempotency keys of POST requests (``IDEMPOTENCY_*``)."""

    model_config = _config("IDEMPOTENCY_")

    # Seconds a key is remembered: a retry with the same key within this time gets the first
    # response back; after it, the key may be used again (and expired keys are purged).
    key_ttl: float = Field(default=24 * 3600.0, ge=60, le=30 * 24 * 3600)


class LoggingSettings(BaseSettings):
    """Log output (``LOG_*``); the format follows the environment unless set."""

    model_config = _config("LOG_")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["console", "json"] | None = None


class TelemetrySettings(BaseSettings):
    """FastAPI's native OpenTelemetry instrumentation (``TELEMETRY_*``)."""

    model_config = _config("TELEMETRY_")

    # Off unless asked for: while on, FastAPI looks for a configured OpenTelemetry provider on
    # every request, about 4% of a read's CPU even when none is configured. Turn it on where an
    # OpenTelemetry SDK is set up (opentelemetry-instrument, or your own providers).
    enabled: bool = False


class HealthSettings(BaseSettings):
    """Readiness checks (``HEALTH_*``)."""

    model_config = _config("HEALTH_")

    check_timeout: float = Field(default=2.0, gt=0, le=30)


class Settings(BaseSettings):
    """Every setting of the service; build one with ``get_settings()`` or pass one to tests."""

    model_config = _config("")

    service_name: str = Field(default=SERVICE_NAME, pattern=r"^[a-z][a-z0-9_]*$")
    environment: Environment = Environment.DEVELOPMENT
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @property
    def queue_prefix(self) -> str:
        """The prefix of every NATS name this service uses."""
        return self.nats.queue_prefix or f"{self.service_name}_{self.environment}"

    @property
    def worker_connections(self) -> int:
        """Connections a worker process's pool gives its tasks (a task holds one, its
        ``TaskWork``): the pool, less the one the outbox's background work takes (the relay,
        and the deletes of the rows of published tasks, one at a time); one at least."""
        pool = self.database.pool_size + self.database.max_overflow
        return max(pool - 1, 1)

    @property
    def worker_concurrency(self) -> int:
        """Tasks one worker process runs at once: never more than its pool serves at once, so
        a task never waits for a connection."""
        return self.worker.concurrency or self.worker_connections

    @property
    def log_format(self) -> Literal["console", "json"]:
        """JSON in production, readable console output elsewhere, unless ``LOG_FORMAT`` says."""
        if self.logging.format is not None:
            return self.logging.format
        return "json" if self.environment is Environment.PRODUCTION else "console"

    @model_validator(mode="after")
    def _worker_concurrency_fits_the_pool(self) -> Self:
        connections = self.worker_connections
        wanted = self.worker.concurrency
        if wanted is not None and wanted > connections:
            msg = (
                f"WORKER_CONCURRENCY ({wanted}) exceeds the connections a worker's pool gives its "
                f"tasks ({connections}: DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW, less one for "
                "the outbox); its tasks would wait for connections. Raise the pool or lower the "
                "concurrency."
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _ack_pending_fits_a_worker(self) -> Self:
        # Fewer would leave a worker's room unused: JetStream stops delivering at the limit.
        if self.nats.max_ack_pending < self.worker_concurrency:
            msg = (
                f"NATS_MAX_ACK_PENDING ({self.nats.max_ack_pending}) is less than the tasks one "
                f"worker process holds at once ({self.worker_concurrency}, WORKER_CONCURRENCY); "
                "set it to at least the worker processes times their concurrency"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _duplicate_window_covers_the_outbox(self) -> Self:
        # A row the relay publishes again must still meet the first copy's id in JetStream.
        horizon = self.outbox.relay_min_age + self.outbox.relay_interval
        horizon += self.outbox.retry_max_delay + self.nats.publish_timeout
        if self.nats.duplicate_window < 2 * horizon:
            msg = (
                f"NATS_DUPLICATE_WINDOW ({self.nats.duplicate_window:g} s) must be at least twice "
                f"the outbox's retry horizon ({horizon:g} s: OUTBOX_RELAY_MIN_AGE + "
                "OUTBOX_RELAY_INTERVAL + OUTBOX_RETRY_MAX_DELAY + NATS_PUBLISH_TIMEOUT)"
            )
            raise ValueError(msg)
        return self


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
