"""Conditional requests (RFC 9110 section 13): entity tags and ``If-Match``.

A resource's entity tag changes whenever the resource does; a client sends back the tag it
last saw in ``If-Match`` and the change is made only if the tag is still current, so two clients
never overwrite each other's changes unseen (optimistic concurrency). Comparison is strong, as
RFC 9110 requires for ``If-Match``: a weak tag (``W/"..."``) never matches.

A field that is not a list of entity tags (RFC 9110 lets a recipient treat an invalid field as it
sees fit) is taken as one that no tag matches: ``If-Match`` then fails with 412, the safe answer
for a condition that cannot hold, and ``If-None-Match`` is simply not met. So every string is an
accepted value, as the schema says, and no malformed condition ever lets a change through.
"""

import re
from dataclasses import dataclass
from http import HTTPStatus

from app.core.errors import AppError

# One entity tag: an optional weak marker and a quoted opaque tag (etagc: %x21 / %x23-7E /
# obs-text).
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
# The If-Match and If-None-Match field: "*" or a comma-separated list of entity tags (empty list
# elements are allowed, as RFC 9110 section 5.6.1 asks of recipients).
IF_MATCH_PATTERN = (
    rf"^[ \t]*(?:\*|(?:,[ \t]*)*{_ENTITY_TAG}(?:[ \t]*,(?:[ \t]*{_ENTITY_TAG})?)*)[ \t]*$"
)
_TAGS = re.compile(_ENTITY_TAG)


class PreconditionFailed(AppError):
    status_code = HTTPStatus.PRECONDITION_FAILED
    code = "precondition_failed"
    title = "Precondition Failed"


def strong_etag(opaque: str) -> str:
    """The strong entity tag with this opaque value (which must not contain a quote)."""
    return f'"{opaque}"'


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed ``If-Match`` field; build it with ``IfMatch.parse``."""

    any_tag: bool
    tags: tuple[str, ...]

    @classmethod
    def parse(cls, field: str) -> "IfMatch":
        """Parse a field; one that does not match ``IF_MATCH_PATTERN`` matches no tag."""
        if not re.fullmatch(IF_MATCH_PATTERN, field):
            return cls(any_tag=False, tags=())
        if field.strip() == "*":
            return cls(any_tag=True, tags=())
        return cls(any_tag=False, tags=tuple(_TAGS.findall(field)))

    def matches(self, current: str) -> bool:
        """Whether the resource whose current strong tag is ``current`` passes the condition."""
        # A weak tag never equals a strong one by strong comparison, so it never matches.
        return self.any_tag or current in self.tags

    def weakly_matches(self, current: str) -> bool:
        """Weak comparison (``If-None-Match``): tags match whatever their weak markers."""
        return self.any_tag or current.removeprefix("W/") in {
            tag.removeprefix("W/") for tag in self.tags
        }


def check_if_match(condition: IfMatch | None, current: str) -> None:
    """Raise ``PreconditionFailed`` unless the condition (if any) holds for ``current``.

    Call it after the resource is locked, so the tag cannot change before the update.
    """
    if condition is not None and not condition.matches(current):
        msg = f"No entity tag in If-Match is the current one ({current})"
        raise PreconditionFailed(msg)
