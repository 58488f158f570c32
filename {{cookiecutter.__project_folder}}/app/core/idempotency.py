"""Idempotent requests with an ``Idempotency-Key`` header (draft-ietf-httpapi-idempotency-key-
header): a client that retries a request with the same key gets the first response back, and
the request is carried out once.

The key is claimed at the start of the request's unit of work with ``INSERT ... ON CONFLICT``:
a second request with the same key arriving meanwhile waits on the unique index until the first
one's transaction ends, then finds its response. The response is stored in the same
transaction as the data it describes, so a crash or an error leaves neither: the key stays free
and a retry carries the request out. Keys expire after ``IDEMPOTENCY_KEY_TTL`` seconds; an
expired key is reused at once, and the ``idempotency.purge`` task deletes the others.
"""

import hashlib
import re
from datetime import datetime, timedelta

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy import (
    DateTime,
    Index,
    Interval,
    LargeBinary,
    String,
    bindparam,
    delete,
    func,
    null,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, DriverStatement
from app.core.errors import Conflict
from app.core.state import app_state
from app.core.unit_of_work import Work
from app.settings import Settings

log = structlog.get_logger(__name__)

# A structured-field string as the draft defines it ("..."), or the same characters unquoted
# (as many clients send them); both name the same key. The alphabet covers UUIDs, ULIDs and
# base64.
KEY_PATTERN = r'^(?:"[A-Za-z0-9._:~+/=-]{1,255}"|[A-Za-z0-9._:~+/=-]{1,255})$'
_KEY = re.compile(KEY_PATTERN)
_KEY_HEADER = b"idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
# The response headers a replay repeats; per-request ones (X-Request-ID) are the replay's own.
_STORED_HEADERS = ("content-type", "location", "etag")


class IdempotencyRecord(Base):
    """A key a client used, what its request was, and the response it got."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "expires_at"),)

    # Method and path: a key names one request to one resource.
    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the request content: a key sent again with other content is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# The statements of a request's unit of work, compiled once (``DriverStatement``).
_TABLE = Base.metadata.tables[IdempotencyRecord.__tablename__]
_NEW = insert(_TABLE).values(expires_at=func.clock_timestamp() + bindparam("ttl", type_=Interval()))
# Claim the key: a key in use waits for the transaction that holds it; an expired one is taken
# over. Returns the key when this request has it.
_CLAIM = DriverStatement(
    _NEW.on_conflict_do_update(
        index_elements=[_TABLE.c.scope, _TABLE.c.key],
        set_={
            "fingerprint": _NEW.excluded.fingerprint,
            "status_code": null(),
            "body": null(),
            "headers": null(),
            "created_at": func.clock_timestamp(),
            "expires_at": _NEW.excluded.expires_at,
        },
        where=_TABLE.c.expires_at <= func.clock_timestamp(),
    ).returning(_TABLE.c.key),
    columns=["scope", "key", "fingerprint"],
)
_WHERE_KEY = (
    _TABLE.c.scope == bindparam("record_scope"),
    _TABLE.c.key == bindparam("record_key"),
)
_RECORD = DriverStatement(
    select(_TABLE.c.fingerprint, _TABLE.c.status_code, _TABLE.c.body, _TABLE.c.headers).where(
        *_WHERE_KEY
    )
)
_REMEMBER = DriverStatement(
    update(_TABLE).where(*_WHERE_KEY), columns=["status_code", "body", "headers"]
)


class IdempotencyKeyReused(Conflict):
    # 409, not the 422 the IETF draft suggests: the body is valid on its own; what it conflicts
    # with is the state an earlier request left (the key is taken), as with any 409.
    code = "idempotency_key_reused"
    title = "Idempotency key reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for a request with other content; "
            "use a new key for a new request"
        )


IDEMPOTENCY_KEY_PARAMETER: dict[str, object] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "A unique value per request (e.g. a UUID), 1 to 255 characters of "
        "A-Z a-z 0-9 . _ : ~ + / = -, optionally quoted. A retry with the same key and "
        "body within IDEMPOTENCY_KEY_TTL gets the first response back "
        "(Idempotent-Replayed: true); the same key with another body is refused (409)."
    ),
    "schema": {"type": "string", "pattern": KEY_PATTERN},
}
"""The ``Idempotency-Key`` header in the OpenAPI document: a route that reads it with
``Idempotency.of`` declares it (``openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER]}``)."""


class Idempotency:
    """The idempotency key of one request; ``replay`` and ``remember`` run in its unit of work."""

    def __init__(self, scope: str, key: str | None, ttl: float) -> None:
        self.scope = scope
        self.key = key.strip('"') if key is not None else None
        self.ttl = ttl
        self._claimed = False

    @classmethod
    def of(cls, request: Request) -> "Idempotency":
        """The request's ``Idempotency-Key``, if it sent one; a malformed key is a 422
        ``validation_error``, as for any header.

        Read off the request rather than declared as a header parameter: FastAPI's work for a
        declared header cost a create about 2.4% of its CPU (measured). So a malformed key is
        found after the body is validated, not with it.
        """
        for name, value in request.scope["headers"]:
            if name == _KEY_HEADER:
                key = value.decode("latin-1")
                break
        else:
            return cls("", None, 0.0)
        if not _KEY.fullmatch(key):
            raise RequestValidationError(
                [
                    {
                        "type": "string_pattern_mismatch",
                        "loc": ("header", "Idempotency-Key"),
                        "msg": f"String should match pattern '{KEY_PATTERN}'",
                        "input": key,
                    }
                ]
            )
        settings = app_state(request, "settings", Settings)
        return cls(f"{request.method} {request.url.path}", key, settings.idempotency.key_ttl)

    async def replay(self, work: Work, content: BaseModel) -> Response | None:
        """The stored response of the key's first use, or None: the key is now this request's
        (or it has none), and the caller carries the request out and calls ``remember``.

        ``content`` identifies the request (its validated body; serialised only when the
        request has a key): a key sent again with other content raises
        ``IdempotencyKeyReused``.
        """
        if self.key is None:
            return None
        fingerprint = hashlib.sha256(content.model_dump_json().encode()).hexdigest()
        claim = _CLAIM.arguments(
            scope=self.scope, key=self.key, fingerprint=fingerprint, ttl=timedelta(seconds=self.ttl)
        )
        driver = await work.connection()
        # Twice at most: a key that expires (and is purged) between the claim and the read
        # is claimed on the second try.
        record = None
        for _ in range(2):
            if await driver.fetchval(_CLAIM.sql, *claim) is not None:
                self._claimed = True
                return None
            # A fresh snapshot (READ COMMITTED): the first request's committed row.
            record = await driver.fetchrow(
                _RECORD.sql, *_RECORD.arguments(record_scope=self.scope, record_key=self.key)
            )
            if record is not None:
                break
        if record is None or record["status_code"] is None or record["body"] is None:
            msg = f"idempotency key {self.key!r} of {self.scope} has no stored response"
            raise RuntimeError(msg)
        if record["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused
        log.info("idempotency.replayed", scope=self.scope, status=record["status_code"])
        return Response(
            content=record["body"],
            status_code=record["status_code"],
            headers={**(record["headers"] or {}), REPLAYED_HEADER: "true"},
        )

    async def remember(self, work: Work, response: Response) -> None:
        """Store the response for later replays, in the request's unit of work."""
        if not self._claimed:
            return
        headers = {
            name: response.headers[name] for name in _STORED_HEADERS if name in response.headers
        }
        driver = await work.connection()
        await driver.execute(
            _REMEMBER.sql,
            *_REMEMBER.arguments(
                record_scope=self.scope,
                record_key=self.key,
                status_code=response.status_code,
                body=bytes(response.body),
                headers=headers,
            ),
        )


async def purge_expired(session: AsyncSession, *, batch_size: int = 1000) -> int:
    """Delete up to ``batch_size`` expired keys; return how many were deleted."""
    expired = (
        select(IdempotencyRecord.scope, IdempotencyRecord.key)
        .where(IdempotencyRecord.expires_at <= func.clock_timestamp())
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    deleted = await session.scalars(
        delete(IdempotencyRecord)
        .where(tuple_(IdempotencyRecord.scope, IdempotencyRecord.key).in_(expired))
        .returning(IdempotencyRecord.key)
    )
    return len(deleted.all())
