"""Structured logging, and the request-context middleware.

Every line has one format, chosen by the settings: JSON lines in production, readable console
output elsewhere. Lines come two ways:

- the service's own events (``log = structlog.get_logger(__name__)``) go from structlog's
  processors straight to the output: no standard-library ``LogRecord``, logger or formatter in
  between;
- the records of other libraries (uvicorn, SQLAlchemy, taskiq) go through the standard library's
  root logger to this module's handler, which renders them with the same processors.

Both write to the handler's stream under the handler's lock, one write per line, so lines never
interleave whichever thread logs. A handler attached to the root logger sees the other
libraries' records only; tests capture the service's events with ``structlog.testing``.
"""

import contextlib
import json
import logging
import random
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.types import EventDict, Processor

from app.core.context import request_id_var
from app.core.errors import internal_error_response
from app.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_HEADER_NAME = REQUEST_ID_HEADER.lower().encode("latin-1")
# An incoming id is reused only when it is short and plain, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_HANDLER_NAME = "app"
# structlog's method names ("info", "warning", ...) and their levels.
_LEVELS: Mapping[str, int] = {
    name.lower(): level for name, level in logging.getLevelNamesMapping().items()
}

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Output:
    """Where lines go and from which level: ``configure_logging`` sets both, and loggers
    already in use follow (structlog keeps each logger from its first use)."""

    handler: logging.StreamHandler[TextIO]
    level: int


_output = _Output(logging.StreamHandler(sys.stdout), logging.INFO)
# The processors of the service's events: one list, changed in place by ``configure_logging``,
# so loggers already in use follow too.
_processors: list[Processor] = []


class _Lines:
    """structlog's logger for the service's own events: each rendered line goes to the
    handler's stream, under the handler's lock, with one write and a flush.

    The access line of a request cost about 52 µs of CPU as a standard-library record
    (``LogRecord``, logger, handler, a formatter copying the event) and 29 µs this way with
    orjson, measured inside the API serving 32 requests at once; a worker writes two lines per
    task.
    """

    __slots__ = ("name",)

    def __init__(self, name: str | None) -> None:
        self.name = name  # the "logger" field (_stamp reads it)

    def msg(self, line: str) -> None:
        """Write one rendered line; a line that cannot be written (a closed pipe, a full disk)
        is reported on stderr and never fails the request or task that logged it, as with the
        standard library's handlers."""
        handler = _output.handler
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
        except Exception:  # noqa: BLE001 - whatever the stream raised, the caller goes on
            if logging.raiseExceptions:
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"--- Logging error ---\n{traceback.format_exc()}")
        finally:
            handler.release()

    debug = info = warning = error = critical = msg


def _lines(*args: object) -> _Lines:
    # structlog.get_logger(name) passes the name on.
    return _Lines(args[0] if args and isinstance(args[0], str) else None)


def _at_level(_logger: object, method: str, event: EventDict) -> EventDict:
    # First in the chain: a line below the level costs a lookup, not a pass through the rest.
    if _LEVELS.get(method, logging.CRITICAL) < _output.level:
        raise structlog.DropEvent
    return event


# structlog's level names for the methods that are not named after a level.
_LEVEL_OF_METHOD: Mapping[str, str] = {"warn": "warning", "exception": "error"}
# The date and time of day of the current second, formatted once per second.
_second: tuple[int, str] = (-1, "")


def _utc_timestamp() -> str:
    """Now, in UTC, as ISO 8601 with microseconds and a Z: ``2026-11-28T10:00:00.123456Z``."""
    global _second  # noqa: PLW0603 - a cache, replaced whole (one assignment, thread-safe)
    now = time.time()
    whole = int(now)
    second, text = _second
    if whole != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int((now - whole) * 1_000_000):06d}Z"


def _stamp(logger: object, method: str, event: EventDict) -> EventDict:
    """``level``, ``logger`` and ``timestamp`` of one of the service's events, in one step:
    the fields structlog's ``add_log_level``, ``add_logger_name`` and ``TimeStamper`` add, in
    about a third of their time (a worker writes two lines per task, the API one per request).
    """
    event["level"] = _LEVEL_OF_METHOD.get(method, method)
    event["logger"] = getattr(logger, "name", None)
    event["timestamp"] = _utc_timestamp()
    return event


def _timestamp(_logger: object, _method: str, event: EventDict) -> EventDict:
    event["timestamp"] = _utc_timestamp()
    return event


def _drop_copies(_logger: object, _method: str, event: EventDict) -> EventDict:
    # Copies of the event that ExtraAdder would add as fields: uvicorn's coloured copy of each
    # message, and the rendered message a handler before ours (pytest's) leaves on the record.
    event.pop("color_message", None)
    event.pop("message", None)
    return event


def _json_line(event: EventDict, *, default: Callable[[object], object]) -> str:
    """The event as one line of JSON, by orjson (about 8 µs less per line than ``json.dumps``).

    What orjson refuses (an integer beyond 64 bits, a key of another type) goes through
    ``json.dumps``; a value it cannot render either (one that contains itself) leaves the event's
    name and the error, so logging never fails the code that logs.
    """
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(event, default=default, skipkeys=True)
    except (TypeError, ValueError) as exc:
        names = {key: str(event.get(key)) for key in ("event", "level", "logger", "timestamp")}
        return json.dumps({**names, "log_error": repr(exc)})


def configure_logging(settings: Settings) -> None:
    """Send the service's events and every library's records to one output, in the format
    and from the level the settings choose."""
    own: list[Processor] = [_at_level, structlog.contextvars.merge_contextvars, _stamp]
    # Records of other libraries also carry their `extra` fields.
    foreign: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_copies,
        _timestamp,
    ]
    renderer: Processor
    if settings.log_format == "json":
        own.append(structlog.processors.format_exc_info)
        foreign.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
    else:
        renderer = structlog.dev.ConsoleRenderer()

    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    level = logging.getLevelNamesMapping()[settings.logging.level]
    _output.handler, _output.level = handler, level
    _processors[:] = [*own, renderer]
    structlog.configure(
        processors=_processors,
        logger_factory=_lines,
        # Every method logs; _at_level drops what is below the current level.
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
    # No record needs where it was logged from, nor the thread or process that logged it
    # (no format shows them): skip computing them for every line, as the logging
    # HOWTO's "Optimization" section describes.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    # Replace only our own handler, so that calling this twice (tests, reloads) does not
    # duplicate lines and handlers that others attached (pytest's caplog) keep working.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn installs handlers of its own; send its records through ours instead. Its access log
    # is replaced by the "http.request" event of RequestContextMiddleware.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def new_request_id() -> str:
    """A new request id: 128 random bits as 32 hex digits.

    An id correlates log lines; it is no secret, so it comes from Python's own generator
    (seeded by the OS, and again in every forked process) rather than from the OS: ``secrets``
    makes a system call per id, about 3% of a GET's time.
    """
    return f"{random.getrandbits(128):032x}"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.fullmatch(candidate) else None
    return None


class RequestContextMiddleware:
    """Give each HTTP request an id, log it once, and turn a crash into a bare 500 problem.

    Pure ASGI (no ``BaseHTTPMiddleware``): it does not buffer bodies or break streaming, and the
    id is bound in structlog's context so every log line of the request carries it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope) or new_request_id()
        token = request_id_var.set(request_id)
        # bind and reset rather than structlog's bound_contextvars, which reads the whole
        # context twice: the same effect for a fraction of the cost.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                header = (_REQUEST_ID_HEADER_NAME, request_id.encode("latin-1"))
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        begin = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("http.unhandled_error", path=scope["path"])
            if started:
                raise
            await internal_error_response(scope["path"])(scope, receive, send_with_id)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - begin) * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**bound)
            request_id_var.reset(token)
