import io
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TextIO

import pytest
import structlog
from httpx import AsyncClient
from structlog.types import EventDict

from app.core import logging as app_logging
from app.core.logging import configure_logging
from app.settings import Environment, LoggingSettings, Settings


def _json_lines(out: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def _our_handler() -> logging.StreamHandler[TextIO]:
    [handler] = [h for h in logging.getLogger().handlers if h.get_name() == "app"]
    assert isinstance(handler, logging.StreamHandler)
    return handler


@pytest.fixture
def reconfigure() -> Iterator[Callable[[Settings], None]]:
    """Configure logging for one test; the test processes' own configuration comes back after."""
    yield configure_logging
    configure_logging(Settings(environment=Environment.TEST))


async def test_request_id_is_echoed_and_logged(
    client: AsyncClient, log_events: list[EventDict]
) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "req-42.a:b"})

    assert response.headers["x-request-id"] == "req-42.a:b"
    [event] = [event for event in log_events if event["event"] == "http.request"]
    assert event["request_id"] == "req-42.a:b"
    assert event["status"] == 200
    assert event["path"] == "/health/live"


async def test_missing_request_id_is_generated(client: AsyncClient) -> None:
    first = await client.get("/health/live")
    second = await client.get("/health/live")

    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_request_ids_differ_between_forked_processes() -> None:
    """Python reseeds its generator in a forked child (uvicorn's and gunicorn's workers), so two
    processes never hand out the same sequence of ids."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python warns about a fork while other threads run (an earlier test's thread pool):
        # the child only computes an id and writes it to a pipe, which takes no lock they hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits
        os.write(write, app_logging.new_request_id().encode())
        os._exit(0)
    os.close(write)
    ours = app_logging.new_request_id()
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode()
    os.waitpid(child, 0)

    assert len(theirs) == len(ours) == 32
    assert int(theirs, 16) != int(ours, 16)


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

    [line] = _json_lines(capsys.readouterr().out)
    assert line == {
        "event": "disk sda is full",
        "device": "sda",
        "level": "warning",
        "logger": "some.library",
        "timestamp": line["timestamp"],
    }


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

    lines = _json_lines(capsys.readouterr().out)
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
    assert "ValueError: no such item" in str(failed["exception"])


def test_own_and_library_lines_never_interleave(
    reconfigure: Callable[[Settings], None],
) -> None:
    reconfigure(Settings(environment=Environment.PRODUCTION))
    stream = _SlowStream()
    _our_handler().setStream(stream)
    own, library = structlog.get_logger("app.test"), logging.getLogger("some.library")

    def write(writer: int) -> None:
        for number in range(50):
            if writer % 2:
                own.info("own.line", writer=writer, number=number)
            else:
                library.info("library line", extra={"writer": writer, "number": number})

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = _json_lines("".join(stream.parts))
    assert sorted((line["writer"], line["number"]) for line in lines) == [
        (writer, number) for writer in range(4) for number in range(50)
    ]


class _SlowStream(io.StringIO):
    """A stream that lets other threads run in the middle of each write: two writers that did
    not share one lock would mix their lines."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        middle = len(text) // 2
        self.parts.append(text[:middle])
        time.sleep(0)  # gives up the GIL: a writer without the lock would write here
        self.parts.append(text[middle:])
        return len(text)


def test_loggers_in_use_follow_a_new_configuration(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    # structlog keeps a logger from its first use (as the module-level `log`s are): a later
    # configuration must still reach it, its level and its output.
    log = structlog.get_logger("app.test")
    log.info("before")
    capsys.readouterr()

    reconfigure(
        Settings(environment=Environment.PRODUCTION, logging=LoggingSettings(level="WARNING"))
    )
    log.info("dropped")
    log.warning("kept", size=2**70)  # beyond orjson's integers: json.dumps renders the line

    [line] = _json_lines(capsys.readouterr().out)
    assert line["event"] == "kept"
    assert line["size"] == 2**70


def test_a_line_that_cannot_be_written_does_not_fail_the_caller(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(Settings(environment=Environment.PRODUCTION))
    _our_handler().setStream(_BrokenPipe())

    structlog.get_logger("app.test").info("lost.line")  # raises nothing

    assert "BrokenPipeError" in capsys.readouterr().err


class _BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(text)


def test_values_json_cannot_render_leave_the_event_and_the_error(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(Settings(environment=Environment.PRODUCTION))
    loop: list[object] = []
    loop.append(loop)
    log = structlog.get_logger("app.test")

    log.info("odd.keys", counts={("a", 1): 2, "b": 3})
    log.info("loop", value=loop)

    keys, looped = _json_lines(capsys.readouterr().out)
    assert keys["counts"] == {"b": 3}
    assert looped["event"] == "loop"
    assert "Circular reference" in str(looped["log_error"])


def test_lines_below_the_level_are_dropped(
    reconfigure: Callable[[Settings], None], capsys: pytest.CaptureFixture[str]
) -> None:
    reconfigure(
        Settings(environment=Environment.PRODUCTION, logging=LoggingSettings(level="WARNING"))
    )
    log = structlog.get_logger("app.test")

    log.info("routine.detail")
    log.warning("worth.a.look")

    assert [line["event"] for line in _json_lines(capsys.readouterr().out)] == ["worth.a.look"]


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


def test_timestamps_are_utc_with_microseconds_and_follow_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One second formatted, then reused within it, then the next one (binary-exact fractions).
    readings = iter([1_800_000_000.25, 1_800_000_000.5, 1_800_000_001.75])
    monkeypatch.setattr(time, "time", lambda: next(readings))

    stamps = [app_logging._utc_timestamp() for _ in range(3)]

    assert stamps == [
        "2027-01-15T08:00:00.250000Z",
        "2027-01-15T08:00:00.500000Z",
        "2027-01-15T08:00:01.750000Z",
    ]


@pytest.mark.parametrize(
    ("method", "level"),
    [("debug", "debug"), ("info", "info"), ("warning", "warning"), ("error", "error")],
)
def test_own_events_carry_the_level_of_their_method(
    reconfigure: Callable[[Settings], None],
    capsys: pytest.CaptureFixture[str],
    method: str,
    level: str,
) -> None:
    reconfigure(
        Settings(environment=Environment.PRODUCTION, logging=LoggingSettings(level="DEBUG"))
    )

    getattr(structlog.get_logger("app.test"), method)("something.happened")

    [line] = _json_lines(capsys.readouterr().out)
    assert (line["level"], line["logger"]) == (level, "app.test")
