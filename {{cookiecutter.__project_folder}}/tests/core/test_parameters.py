"""A path parameter read off the request validates, fails and is documented as FastAPI does
for a declared one."""

import uuid
from typing import Annotated

import pytest
from fastapi import FastAPI, Path, Request
from httpx import ASGITransport, AsyncClient

from app.core.parameters import PathParameter

THING_ID = PathParameter("thing_id", uuid.UUID, description="The thing's id.")


def declared_app() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def get_thing(
        thing_id: Annotated[uuid.UUID, Path(description="The thing's id.")],
    ) -> str:
        return str(thing_id)

    return app


def reading_app() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}", openapi_extra={"parameters": [THING_ID.openapi]})  # noqa: FAST003 - the subject
    async def get_thing(request: Request) -> str:
        return str(THING_ID.of(request))

    return app


async def get(app: FastAPI, path: str) -> tuple[int, object]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get(path)
    return response.status_code, response.json()


def test_it_is_documented_as_a_declared_parameter() -> None:
    def parameters(app: FastAPI) -> object:
        return app.openapi()["paths"]["/things/{thing_id}"]["get"]["parameters"]

    assert parameters(reading_app()) == parameters(declared_app())


# Fixed values: every test process must collect the same tests.
@pytest.mark.parametrize(
    "value",
    ["0b3c2f6e-5d7a-4f1e-9c2b-8a6d4e1f3b57", "0b3c2f6e5d7a4f1e9c2b8a6d4e1f3b57", "nope", "1234"],
)
async def test_it_answers_as_a_declared_parameter(value: str) -> None:
    path = f"/things/{value}"

    assert await get(reading_app(), path) == await get(declared_app(), path)


async def test_a_malformed_value_is_a_422_at_its_place_in_the_path() -> None:
    status, body = await get(reading_app(), "/things/nope")

    assert status == 422
    assert isinstance(body, dict)
    assert [error["loc"] for error in body["detail"]] == [["path", "thing_id"]]
