"""Keyset (cursor) pagination: stable pages while rows are inserted, no OFFSET scans.

A cursor is the position after the last row of a page: its ``created_at`` in microseconds since
the epoch and its id, ``"<micros>-<uuid hex>"``. Clients treat it as opaque. Every string the
schema admits (``CURSOR_PATTERN``) is a position, so a well-formed cursor is never refused: one
the API did not issue just starts the page somewhere, and a malformed one is a 422 like any other
invalid parameter.
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, Field, StringConstraints

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# At most 17 digits: the latest position (year 5138) stays within what datetime holds.
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9a-f]{32}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
CursorText = Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)]
Cursor = Annotated[
    CursorText | None,
    Query(description="The `next_cursor` of the previous page"),
]


class Page[T](BaseModel):
    """One page of results and the cursor of the next one (null on the last page)."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, examples=["1795773600123456-0b6f4c9e2a554d5e9d1a3f1f2a7b8c9d"]
    )


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    """The cursor of the position after the row (created_at, id)."""
    return f"{(created_at - _EPOCH) // _MICROSECOND}-{row_id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) position of a cursor. Routes take cursors as ``CursorText``, which
    admits nothing else; any other string is a bug of the caller (``ValueError``)."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        msg = f"not a cursor: {cursor!r} (take it as CursorText)"
        raise ValueError(msg)
    micros, _, row_id = cursor.partition("-")
    return _EPOCH + int(micros) * _MICROSECOND, UUID(hex=row_id)
