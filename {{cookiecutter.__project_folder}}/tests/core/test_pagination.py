import uuid
from datetime import UTC, datetime

import pytest

from app.core.pagination import InvalidCursor, decode_cursor, encode_cursor


def test_cursor_round_trips() -> None:
    created_at = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    row_id = uuid.uuid4()

    assert decode_cursor(encode_cursor(created_at, row_id)) == (created_at, row_id)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        "bm90aGluZw",  # "nothing"
        "MjAyNi0wMS0wMVQwMDowMDowMHxub3QtYS11dWlk",  # 2026-01-01T00:00:00|not-a-uuid
        "MjAyNi0wMS0wMVQwMDowMDowMHwwYjZmNGM5ZS0yYTU1LTRkNWUtOWQxYS0zZjFmMmE3YjhjOWQ",  # naive
        "",
    ],
)
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)
