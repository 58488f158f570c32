import re
import uuid
from datetime import UTC, datetime

import pytest

from app.core.pagination import CURSOR_PATTERN, decode_cursor, encode_cursor


def test_cursor_round_trips() -> None:
    created_at = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    row_id = uuid.uuid4()

    cursor = encode_cursor(created_at, row_id)

    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == (created_at, row_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "0-00000000000000000000000000000000",
        "99999999999999999-ffffffffffffffffffffffffffffffff",  # the latest the pattern admits
        "00000000000000001-0123456789abcdef0123456789abcdef",
    ],
)
def test_every_cursor_the_pattern_admits_is_a_position(cursor: str) -> None:
    created_at, row_id = decode_cursor(cursor)

    assert created_at.tzinfo is UTC
    assert row_id.hex == cursor.partition("-")[2]


@pytest.mark.parametrize("cursor", ["", "garbage", "1-", "-1", "1-XYZ", "1-" + "0" * 31])
def test_a_string_outside_the_pattern_is_a_bug_of_the_caller(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(cursor)
