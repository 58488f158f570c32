"""Database errors as HTTP answers: a documented 4xx or a 503, never a 500.

PostgreSQL names every error with a SQLSTATE; asyncpg puts it on its exceptions and SQLAlchemy
keeps it on the DBAPI error it wraps them in (``DBAPIError.orig.sqlstate``); reads, which run on
the driver (``app.core.database.Reader``), raise asyncpg's own. The mapping:

========================================  ======  ======================
SQLSTATE                                  status  code
========================================  ======  ======================
22001 string too long                     422     value_too_long
22003, 22008, 22015 numeric/date overflow 422     value_out_of_range
22021, 22P05 characters the DB refuses    422     invalid_value
23502 not null, 23514 check, other 23xxx  422     constraint_violation
23505 unique, 23P01 exclusion             409     duplicate
23503 foreign key, 23001 restrict         409     reference_conflict
40001 serialization, 40P01 deadlock       503     database_busy (after retries)
55P03 lock not available, 55006 in use    503     database_busy
57014 statement timeout (query canceled)  503     database_timeout
08xxx, 53xxx, 57P01-57P03, 25006, 3D000   503     database_unavailable
========================================  ======  ======================

A foreign key is a conflict (409), not invalid content: whether the row referred to exists is
the current state of another resource, which a retry or another request may change.

``DatabaseErrorMiddleware`` applies it to every request: a serialization failure or a deadlock
runs the whole request again (the unit of work rolled back, and tasks are only published after a
commit, so an attempt that failed left nothing behind), a bounded number of times with jittered
backoff, while no byte of the response has been sent. The problem's ``detail`` names the kind of
failure only; the values, the SQL and the constraint go to the log, never to the client.
"""

import asyncio
import random
from collections.abc import Mapping
from http import HTTPStatus

import asyncpg
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.database import DatabaseConnectionError
from app.core.errors import AppError, Conflict, ServiceUnavailable, app_error_response
from app.settings import DatabaseSettings

log = structlog.get_logger(__name__)

RETRYABLE = frozenset({"40001", "40P01"})
RETRY_AFTER: Mapping[str, str] = {"Retry-After": "Seconds to wait before trying again."}


class InvalidValue(AppError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_value"
    title = "Invalid value"


class ValueTooLong(InvalidValue):
    code = "value_too_long"
    title = "Value too long"


class ValueOutOfRange(InvalidValue):
    code = "value_out_of_range"
    title = "Value out of range"


class ConstraintViolation(InvalidValue):
    code = "constraint_violation"
    title = "Constraint violation"


class Duplicate(Conflict):
    code = "duplicate"
    title = "Already exists"


class ReferenceConflict(Conflict):
    code = "reference_conflict"
    title = "Conflicts with a related resource"


class DatabaseBusy(ServiceUnavailable):
    documented_headers = RETRY_AFTER
    code = "database_busy"
    title = "Database busy"


class DatabaseTimeout(ServiceUnavailable):
    documented_headers = RETRY_AFTER
    code = "database_timeout"
    title = "Database timeout"


class DatabaseUnavailable(ServiceUnavailable):
    documented_headers = RETRY_AFTER
    code = "database_unavailable"
    title = "Database unavailable"


# The errors any request that reads the database may meet (a route lists them in its
# ``error_responses``: ``error_responses(OrderNotFound, *DATABASE_READ_ERRORS)``) ...
DATABASE_READ_ERRORS: tuple[type[AppError], ...] = (
    DatabaseBusy,
    DatabaseTimeout,
    DatabaseUnavailable,
)
# ... and those a request that writes (a unit of work) may meet.
DATABASE_ERRORS: tuple[type[AppError], ...] = (
    ValueTooLong,
    ValueOutOfRange,
    InvalidValue,
    ConstraintViolation,
    Duplicate,
    ReferenceConflict,
    DatabaseBusy,
    DatabaseTimeout,
    DatabaseUnavailable,
)

_BY_SQLSTATE: dict[str, tuple[type[AppError], str]] = {
    "22001": (ValueTooLong, "A value is longer than the database stores."),
    "22003": (ValueOutOfRange, "A number is outside the range the database stores."),
    "22008": (ValueOutOfRange, "A date or time is outside the range the database stores."),
    "22015": (ValueOutOfRange, "An interval is outside the range the database stores."),
    "22021": (InvalidValue, "A text value has characters the database does not store."),
    "22P05": (InvalidValue, "A text value has characters the database does not store."),
    "23505": (Duplicate, "A resource with the same unique values already exists."),
    "23P01": (Duplicate, "A resource that conflicts with this one already exists."),
    "23503": (ReferenceConflict, "A related resource does not exist or still refers to this."),
    "23001": (ReferenceConflict, "A related resource still refers to this one."),
    "40001": (DatabaseBusy, "Concurrent changes conflicted; retry the request."),
    "40P01": (DatabaseBusy, "Concurrent changes conflicted; retry the request."),
    "55P03": (DatabaseBusy, "A resource is locked by another operation; retry the request."),
    "55006": (DatabaseBusy, "A resource is in use by another operation; retry the request."),
    "57014": (DatabaseTimeout, "The database took too long; retry the request."),
    "25006": (DatabaseUnavailable, "The database accepts no writes now; retry the request."),
    "3D000": (DatabaseUnavailable, "The database cannot be reached; retry the request."),
}
_BY_CLASS: dict[str, tuple[type[AppError], str]] = {
    "23": (ConstraintViolation, "A value breaks a rule of the data."),
    "08": (DatabaseUnavailable, "The database cannot be reached; retry the request."),
    "53": (DatabaseUnavailable, "The database is out of resources; retry the request."),
    "57": (DatabaseUnavailable, "The database is shutting down; retry the request."),
}
_UNREACHABLE = (DatabaseUnavailable, "The database cannot be reached; retry the request.")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (asyncpg's, or as SQLAlchemy wraps it), if it has one."""
    if isinstance(exc, asyncpg.PostgresError):
        return exc.sqlstate
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        return code if isinstance(code, str) else None
    return None


def is_retryable(exc: BaseException) -> bool:
    """A serialization failure or a deadlock: the same transaction, run again, may succeed."""
    return sqlstate(exc) in RETRYABLE


def to_app_error(exc: BaseException, *, retry_after: int) -> AppError | None:
    """The client's view of a database error; None when ``exc`` is not one this maps."""
    mapped: tuple[type[AppError], str] | None = None
    if isinstance(exc, DatabaseConnectionError | PoolTimeoutError):
        mapped = _UNREACHABLE
    elif isinstance(exc, DBAPIError | asyncpg.PostgresError):
        code = sqlstate(exc)
        if code is not None:
            mapped = _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2])
        elif isinstance(exc, DBAPIError) and exc.connection_invalidated:
            mapped = _UNREACHABLE
    if mapped is None:
        return None
    error_class, detail = mapped
    headers = None
    if issubclass(error_class, ServiceUnavailable):
        headers = {"Retry-After": str(retry_after)}
    return error_class(detail, headers=headers)


def _log_context(exc: BaseException) -> dict[str, object]:
    # Names of what failed, never its values (asyncpg's message and detail quote them).
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    cause = getattr(cause, "__cause__", None) or cause
    context: dict[str, object] = {"error_type": type(exc).__name__, "sqlstate": sqlstate(exc)}
    for name in ("table_name", "column_name", "constraint_name"):
        if value := getattr(cause, name, None):
            context[name] = value
    return context


class _ReplayableBody:
    """Keeps the request's body as the app reads it, so another attempt can read it again."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._kept: list[Message] = []
        self._size = 0
        self.replayable = True

    def receiver(self) -> Receive:
        """A ``receive`` for one attempt: what earlier attempts read, then the rest."""
        replay = list(self._kept)

        async def receive() -> Message:
            if replay:
                return replay.pop(0)
            message = await self._receive()
            if self.replayable and message["type"] == "http.request":
                self._size += len(message.get("body", b""))
                if self._size > self._limit:
                    self.replayable = False
                    self._kept.clear()
                else:
                    self._kept.append(message)
            return message

        return receive


class DatabaseErrorMiddleware:
    """Retries requests that met a serialization failure or deadlock; renders database errors
    as problems. Pure ASGI; sits inside ``RequestContextMiddleware`` (request id, log)."""

    def __init__(self, app: ASGIApp, *, settings: DatabaseSettings) -> None:
        self.app = app
        self.settings = settings
        self._random = random.Random()  # noqa: S311 - jitter, not a secret

    def backoff(self, attempt: int) -> float:
        """Full jitter: a random delay up to the exponential bound of this attempt."""
        bound = min(self.settings.retry_max_delay, self.settings.retry_delay * 2 ** (attempt - 1))
        return self._random.uniform(0, bound)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _ReplayableBody(receive, self.settings.retry_max_body)
        # The router writes into the scope (route, path params); a rerun starts from the original
        # keys, and the scope keeps what the last attempt wrote, for the middleware outside.
        original = dict(scope)
        state = dict(scope.get("state", {}))
        attempt = 1
        while True:
            started = False

            async def send_tracked(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send(message)

            if attempt > 1:
                scope.clear()
                scope.update(original)
                if "state" in original:
                    scope["state"] = dict(state)
            try:
                await self.app(scope, body.receiver(), send_tracked)
            except Exception as exc:
                error = to_app_error(exc, retry_after=self.settings.retry_after)
                if error is None or started:
                    raise
                if is_retryable(exc) and attempt < self.settings.retry_attempts and body.replayable:
                    delay = self.backoff(attempt)
                    log.warning(
                        "database.retry",
                        attempt=attempt,
                        delay=round(delay, 3),
                        **_log_context(exc),
                    )
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                log.warning(
                    "database.error", code=error.code, attempts=attempt, **_log_context(exc)
                )
                await app_error_response(error, scope["path"])(scope, receive, send)
            return
