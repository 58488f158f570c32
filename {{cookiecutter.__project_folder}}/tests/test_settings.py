import pytest
from pydantic import ValidationError

from app.settings import Environment, Settings


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Read settings from the environment only, never from a developer's .env."""
    monkeypatch.chdir(tmp_path_factory.mktemp("settings"))
    for name in ("ENVIRONMENT", "DATABASE_URL", "NATS_URL", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


def test_plain_variables_fill_the_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db:5432/orders")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("NATS_URL", "nats://queue:4222")
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")

    settings = Settings()

    assert settings.database.url.get_secret_value() == "postgresql+asyncpg://u@db:5432/orders"
    assert settings.database.pool_size == 7
    assert settings.nats.url == "nats://queue:4222"
    assert settings.environment is Environment.TEST
    assert settings.logging.level == "DEBUG"


def test_dotenv_file_is_read(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("dotenv")
    (folder / ".env").write_text("NATS_URL=nats://from-dotenv:4222\n")

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        settings = Settings()

    assert settings.nats.url == "nats://from-dotenv:4222"


def test_database_url_is_hidden_in_repr() -> None:
    settings = Settings()

    assert "postgresql" not in repr(settings)


def test_unknown_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")

    with pytest.raises(ValidationError, match="environment"):
        Settings()
