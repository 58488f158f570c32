import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import structlog
from httpx import AsyncClient

from app.core.logging import configure_logging
from app.settings import Environment, LoggingSettings, Settings


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    return [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == name
    ]


@pytest.fixture
def reconfigure() -> Iterator[Callable[[Settings], None]]:
    """Configure logging for one test; the test processes' own configuration comes back after."""
    yield configure_logging
    configure_logging(Settings(environment=Environment.TEST))


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


def test_production_logs_are_json_lines(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(Settings(environment=Environment.PRODUCTION))

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


def test_own_events_are_json_lines_with_their_context(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(Settings(environment=Environment.PRODUCTION))
    log = structlog.get_logger("app.orders.service")

    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        log.info("order.created", order_id="o-1", total="12.50")
        try:
            raise ValueError("no such item")
        except ValueError:
            log.exception("order.failed")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [created] = [line for line in lines if line["event"] == "order.created"]
    [failed] = [line for line in lines if line["event"] == "order.failed"]
    assert created == {
        "order_id": "o-1",
        "total": "12.50",
        "event": "order.created",
        "request_id": "r-1",
        "level": "info",
        "logger": "app.orders.service",
        "timestamp": created["timestamp"],
    }
    assert datetime.fromisoformat(str(created["timestamp"])).utcoffset() == timedelta(0)
    assert failed["level"] == "error"
    assert "ValueError: no such item" in failed["exception"]


def test_other_handlers_get_the_event_itself(
    reconfigure: Callable[[Settings], None],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reconfigure(Settings(environment=Environment.DEVELOPMENT))
    caplog.set_level(logging.INFO)

    structlog.get_logger("app.test").info("thing.done", thing_id="t-1")

    [event] = _events(caplog, "thing.done")
    assert event["thing_id"] == "t-1"
    assert event["level"] == "info"
    assert "thing.done" in capsys.readouterr().out, "rendered by our handler too"


def test_lines_below_the_level_are_dropped(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(
        Settings(environment=Environment.PRODUCTION, logging=LoggingSettings(level="WARNING"))
    )
    log = structlog.get_logger("app.test")

    log.info("routine.detail")
    log.warning("worth.a.look")

    out = capsys.readouterr().out
    assert "routine.detail" not in out
    assert '"event": "worth.a.look"' in out


def test_console_lines_show_the_exception(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(Settings(environment=Environment.DEVELOPMENT))

    try:
        raise RuntimeError("broken pipe")
    except RuntimeError:
        structlog.get_logger("app.test").exception("job.crashed")

    out = capsys.readouterr().out
    assert "job.crashed" in out
    assert "RuntimeError: broken pipe" in out
