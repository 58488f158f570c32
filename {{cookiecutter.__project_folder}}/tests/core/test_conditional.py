"""If-Match parsing and comparison as RFC 9110 defines them."""

import re

import pytest

from app.core.conditional import (
    IF_MATCH_PATTERN,
    IfMatch,
    PreconditionFailed,
    check_if_match,
    strong_etag,
)

CURRENT = strong_etag("7")


@pytest.mark.parametrize(
    ("field", "matches"),
    [
        ("*", True),
        (' "7" ', True),
        ('"1", "7"', True),
        (', "7",,', True),
        ('"1"', False),
        ('W/"7"', False),  # strong comparison: a weak tag never matches
        ('"77"', False),
        ('"8", W/"7"', False),
    ],
)
def test_if_match_uses_strong_comparison(field: str, *, matches: bool) -> None:
    assert re.fullmatch(IF_MATCH_PATTERN, field)
    assert IfMatch.parse(field).matches(CURRENT) is matches


@pytest.mark.parametrize(("field", "matches"), [('W/"7"', True), ('"7"', True), ('"8"', False)])
def test_if_none_match_uses_weak_comparison(field: str, *, matches: bool) -> None:
    assert IfMatch.parse(field).weakly_matches(CURRENT) is matches


@pytest.mark.parametrize("field", ["", "7", '"7', "W/7", '"7" "8"', "* , *", '"7"; x', ","])
def test_malformed_fields_match_no_tag(field: str) -> None:
    assert re.fullmatch(IF_MATCH_PATTERN, field) is None
    parsed = IfMatch.parse(field)
    assert not parsed.matches(CURRENT)
    assert not parsed.weakly_matches(CURRENT)


def test_a_failed_condition_raises_a_412() -> None:
    check_if_match(None, CURRENT)
    check_if_match(IfMatch.parse(CURRENT), CURRENT)

    with pytest.raises(PreconditionFailed) as failed:
        check_if_match(IfMatch.parse('"1"'), CURRENT)

    assert failed.value.status_code == 412
    assert failed.value.code == "precondition_failed"
