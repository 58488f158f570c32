from app.settings import Environment, NatsSettings, Settings
from app.worker.queue import QueueConfig


def test_names_are_prefixed_per_service_and_environment() -> None:
    settings = Settings(environment=Environment.PRODUCTION)

    config = QueueConfig.from_settings(settings)

    prefix = f"{settings.service_name}_production"
    assert config.subject == f"{prefix}.tasks"
    assert config.stream == f"{prefix}_tasks"
    assert config.durable == f"{prefix}_worker"
    assert config.dead_letter_stream == f"{prefix}_dead_letter"
    assert config.dead_letter_subject == f"{prefix}.dead_letter"


def test_an_explicit_prefix_wins() -> None:
    settings = Settings(nats=NatsSettings(queue_prefix="blue"))

    assert QueueConfig.from_settings(settings).stream == "blue_tasks"


def test_retry_delay_doubles_up_to_the_cap() -> None:
    config = QueueConfig.from_settings(
        Settings(nats=NatsSettings(retry_delay=0.5, retry_max_delay=3))
    )

    assert [config.retry_delay_after(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
