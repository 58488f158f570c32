"""Structured logging through the standard library, and the request-context middleware.

structlog renders every record, ours and those of uvicorn, SQLAlchemy or taskiq, so one
pipeline decides the format: JSON lines in production, readable console output elsewhere.
"""

import logging
import re
import sys
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import request_id_var
from app.core.errors import internal_error_response
from app.settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is reused only when it is short and plain, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_HANDLER_NAME = "app"

log = structlog.get_logger(__name__)


def _drop_color_message(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    # uvicorn passes a coloured copy of each message as an extra; it is noise in every format.
    event.pop("color_message", None)
    return event


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's ``ProcessorFormatter``, with a shorter path for structlog's own records.

    Those arrive with their event dict complete (every processor already ran), so they are
    rendered from a copy of it, without the record copy and the second pass the base class makes
    for every record; the copy leaves ``record.msg`` intact for other handlers (``caplog``).
    Records of other libraries take the base class's path through ``foreign_pre_chain``.
    """

    def format(self, record: logging.LogRecord) -> str:
        method = record.__dict__.get("_name")  # set by wrap_for_formatter
        if method is None or not isinstance(record.msg, dict):
            return super().format(record)
        renderer = self.processors[-1]  # the last processor renders
        rendered = renderer(None, method, dict(record.msg))
        return rendered if isinstance(rendered, str) else str(rendered)


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging through one formatter chosen by the settings."""
    context: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # Records of other libraries also carry their `extra` fields, minus uvicorn's coloured copy
    # (the two steps do nothing for structlog's own events).
    own: list[structlog.types.Processor] = [*context, stamp]
    foreign: list[structlog.types.Processor] = [
        *context,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        stamp,
    ]
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        own.append(structlog.processors.format_exc_info)
        foreign.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[
            # A line below the level costs a level check, not a pass through the processors.
            structlog.stdlib.filter_by_level,
            *own,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        _Formatter(
            foreign_pre_chain=foreign,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    # No record needs where it was logged from, nor the thread or process that logged it
    # (no format shows them): skip computing them for every line, as the logging
    # HOWTO's "Optimization" section describes. A worker logs two lines per task.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    # Replace only our own handler, so that calling this twice (tests, reloads) does not
    # duplicate lines and handlers that others attached (pytest's caplog) keep working.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.addHandler(handler)
    root.setLevel(settings.logging.level)
    # uvicorn installs handlers of its own; send its records through ours instead. Its access log
    # is replaced by the "http.request" event of RequestContextMiddleware.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


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

        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        begin = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
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
                request_id_var.reset(token)
