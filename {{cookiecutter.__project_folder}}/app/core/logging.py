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


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging through one formatter chosen by the settings."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
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
