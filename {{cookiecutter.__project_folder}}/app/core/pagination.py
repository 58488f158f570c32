"""Keyset (cursor) pagination: stable pages while rows are inserted, no OFFSET scans."""

import base64
import binascii
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Query
from pydantic import BaseModel, Field

from app.core.errors import BadRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="The `next_cursor` of the previous page"),
]


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    title = "Invalid cursor"


class Page[T](BaseModel):
    """One page of results and the cursor of the next one (null on the last page)."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, examples=["MjAyNi0xMS0yN1QxMDowMDowMCswMDowMHw..."]
    )


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    """An opaque cursor for the position after the row (created_at, id)."""
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) position a cursor stands for; ``InvalidCursor`` when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, row_id = raw.split("|")
        position = datetime.fromisoformat(created_at), UUID(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        msg = "The cursor is not one this API returned"
        raise InvalidCursor(msg) from exc
    if position[0].tzinfo is None:
        msg = "The cursor is not one this API returned"
        raise InvalidCursor(msg)
    return position
