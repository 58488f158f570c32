import logging

import pytest
from httpx import AsyncClient

from app.core.logging import configure_logging
from app.settings import Environment, LoggingSettings, Settings


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == name
    ]


async def test_request_id_is_echoed_and_logged(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    response = await client.get("/health/live", headers={"X-Request-ID": "req-42.a:b"})

    assert response.headers["x-request-id"] == "req-42.a:b"
    [event] = _events(caplog, "http.request")
    assert event["request_id"] == "req-42.a:b"
    assert event["status"] == 200
    assert event["path"] == "/health/live"


async def test_missing_request_id_is_generated(client: AsyncClient) -> None:
    first = await client.get("/health/live")
    second = await client.get("/health/live")

    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("unsafe", ["x" * 129, "a b", "<script>", "id\u00e9"])
async def test_unsafe_request_id_is_replaced(client: AsyncClient, unsafe: str) -> None:
    response = await client.get("/health/live", headers=[(b"X-Request-ID", unsafe.encode("utf-8"))])

    assert response.headers["x-request-id"] != unsafe
    assert len(response.headers["x-request-id"]) == 32


def test_production_logs_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(environment=Environment.PRODUCTION)
    configure_logging(settings)

    logging.getLogger("some.library").warning(
        "disk %s is full", "sda", extra={"color_message": "coloured copy", "device": "sda"}
    )

    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("{")
    assert '"event": "disk sda is full"' in line
    assert '"level": "warning"' in line
    assert '"device": "sda"' in line
    assert "coloured copy" not in line


def test_log_format_follows_environment_unless_set() -> None:
    assert Settings(environment=Environment.DEVELOPMENT).log_format == "console"
    explicit = Settings(environment=Environment.DEVELOPMENT, logging=LoggingSettings(format="json"))
    assert explicit.log_format == "json"
