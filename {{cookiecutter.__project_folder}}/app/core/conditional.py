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
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


IF_NONE_MATCH = "If-None-Match"
IF_NONE_MATCH_DESCRIPTION = (
    "ETags the client holds (or `*`): 304 Not Modified, without a body, when one of them is "
    "still the current one (weak comparison); a field that is no list of tags is not met."
)
_IF_NONE_MATCH = IF_NONE_MATCH.lower().encode("latin-1")
_ETAG = b"etag"
# What a 304 keeps of the 200 it stands for (RFC 9110 section 15.4.5).
NOT_MODIFIED_KEEPS = ("Content-Location", "Date", "ETag", "Vary", "Cache-Control", "Expires")
_KEPT = frozenset(name.lower().encode("latin-1") for name in NOT_MODIFIED_KEEPS)
_CONDITIONAL_METHODS = frozenset({"GET", "HEAD"})


def _field(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


class NotModifiedMiddleware:
    """Conditional GET for every route (RFC 9110 section 13.1.2): a GET or HEAD that sends
    ``If-None-Match`` with a tag that weakly matches the ``ETag`` of the 200 it would get
    receives 304 Not Modified instead, with the headers a 304 keeps and no body.

    Routes only set ``ETag``; ``app.core.openapi`` documents the header and the 304 on every GET
    whose 200 declares an ``ETag``. Pure ASGI: a request without the header costs a scan of its
    headers, where a header parameter on the route cost FastAPI's per-parameter work on every
    request (about 7% of a GET's CPU).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        field = None
        if scope["type"] == "http" and scope["method"] in _CONDITIONAL_METHODS:
            field = _field(scope["headers"], _IF_NONE_MATCH)
        if field is None:
            await self.app(scope, receive, send)
            return
        condition = IfMatch.parse(field.decode("latin-1"))
        not_modified = False

        async def send_conditionally(message: Message) -> None:
            nonlocal not_modified
            if message["type"] == "http.response.start" and message["status"] == HTTPStatus.OK:
                headers = message.get("headers", ())
                etag = _field(headers, _ETAG)
                if etag is not None and condition.weakly_matches(etag.decode("latin-1")):
                    not_modified = True
                    kept = [(name, value) for name, value in headers if name.lower() in _KEPT]
                    await send(
                        {
                            "type": "http.response.start",
                            "status": int(HTTPStatus.NOT_MODIFIED),
                            "headers": kept,
                        }
                    )
                    return
            elif message["type"] == "http.response.body" and not_modified:
                # The body of the 200 is dropped; the 304 ends with the 200's last part.
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app(scope, receive, send_conditionally)
