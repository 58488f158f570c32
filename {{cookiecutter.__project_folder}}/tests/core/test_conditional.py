"""If-Match parsing and comparison as RFC 9110 defines them, and conditional GETs."""

import re
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse
from httpx import ASGITransport, AsyncClient

from app.core.conditional import (
    IF_MATCH_PATTERN,
    IfMatch,
    NotModifiedMiddleware,
    PreconditionFailed,
    check_if_match,
    strong_etag,
)
from app.core.openapi import ServiceAPI
from app.main import create_app
from app.settings import Settings

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


# NotModifiedMiddleware, on an application of its own: routes that answer with an ETag.


def _conditional_app() -> ServiceAPI:
    application = ServiceAPI()
    application.add_middleware(NotModifiedMiddleware)
    _add_routes(application)
    return application


def _add_routes(application: FastAPI) -> None:
    tagged = {"ETag": CURRENT, "Content-Location": "/things/7", "X-Other": "dropped on a 304"}

    def thing() -> Response:
        return Response(b'{"id": 7}', media_type="application/json", headers=tagged)

    etag_documented: dict[int | str, dict[str, object]] = {
        200: {"headers": {"ETag": {"description": "The version."}}}
    }

    @application.get("/thing", responses=etag_documented)
    async def get_thing() -> Response:
        return thing()

    @application.head("/thing")
    async def head_thing() -> Response:
        return thing()

    @application.post("/thing", responses=etag_documented)
    async def post_thing() -> Response:
        return thing()

    @application.get("/streamed")
    async def streamed() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"first "
            yield b"second"

        return StreamingResponse(parts(), headers=tagged)

    @application.get("/created", status_code=201)
    async def created() -> Response:
        return Response(b"new", status_code=201, headers=tagged)

    @application.get("/untagged")
    async def untagged() -> Response:
        return Response(b"no tag")


@pytest.fixture
async def conditional() -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=_conditional_app())
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize("field", ['W/"7"', '"1", "7"', "*"])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/thing"), ("HEAD", "/thing"), ("GET", "/streamed")]
)
async def test_a_current_tag_gets_304_with_the_headers_a_304_keeps_and_no_body(
    conditional: AsyncClient, method: str, path: str, field: str
) -> None:
    response = await conditional.request(method, path, headers={"If-None-Match": field})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == CURRENT
    assert response.headers["Content-Location"] == "/things/7"
    assert "X-Other" not in response.headers
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize("field", ['"8"', "not a list of tags", ""])
async def test_a_tag_that_is_not_current_gets_the_whole_response(
    conditional: AsyncClient, field: str
) -> None:
    response = await conditional.get("/streamed", headers={"If-None-Match": field})

    assert response.status_code == 200
    assert response.content == b"first second"
    assert response.headers["X-Other"] == "dropped on a 304"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/thing", 200), ("GET", "/created", 201), ("GET", "/untagged", 200)],
)
async def test_only_a_get_or_head_answered_200_with_an_etag_becomes_304(
    conditional: AsyncClient, method: str, path: str, status: int
) -> None:
    response = await conditional.request(method, path, headers={"If-None-Match": "*"})

    assert response.status_code == status
    assert response.content


def test_openapi_documents_if_none_match_and_304_on_a_get_whose_200_has_an_etag(
    settings: Settings,
) -> None:
    application = create_app(settings)
    _add_routes(application)
    paths = application.openapi()["paths"]

    def parameters(path: str, method: str) -> list[str]:
        return [p["name"] for p in paths[path][method].get("parameters", [])]

    assert parameters("/thing", "get") == ["If-None-Match"]
    assert set(paths["/thing"]["get"]["responses"]["304"]["headers"]) == {"ETag", "X-Request-ID"}
    assert "If-None-Match" not in parameters("/thing", "post")
    assert "304" not in paths["/thing"]["post"]["responses"]
    assert "If-None-Match" not in parameters("/untagged", "get")
    assert "304" not in paths["/untagged"]["get"]["responses"]
