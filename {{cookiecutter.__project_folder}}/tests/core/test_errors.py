import re

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from httpx import AsyncClient
from pydantic import BaseModel, Field

from app.core.errors import Conflict, error_responses
from app.main import create_app
from app.settings import Environment, Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def route_paths(app: FastAPI) -> list[str]:
    """Every path the app serves, its parameters filled in with a plain value."""
    templates = {r.path for r in iter_route_contexts(app.routes) if r.methods and r.path}
    return sorted(re.sub(r"{[^}]+}", "0b6f4c9e-2a55-4d5e-9d1a-3f1f2a7b8c9d", t) for t in templates)


def served_methods(app: FastAPI, path: str) -> set[str]:
    """The methods of every route whose pattern matches ``path``."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        if route.methods and route.path_regex.match(path):
            methods |= route.methods
    return methods


class Widget(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)


class WidgetJammed(Conflict):
    code = "widget_jammed"
    title = "Widget jammed"


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    """The application with a few routes that fail on purpose."""

    @app.post("/widgets", responses=error_responses(WidgetJammed, validation=True))
    async def create_widget(widget: Widget) -> Widget:
        if widget.name == "jam":
            raise WidgetJammed("The widget machine is jammed")
        return widget

    @app.get("/crash")
    async def crash() -> None:
        msg = "password=hunter2 in a secret internal message"
        raise RuntimeError(msg)

    return app


async def test_unknown_route_is_a_404_problem(client: AsyncClient) -> None:
    response = await client.get("/nope")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:problem-type:not-found"
    assert body["title"] == "Not Found"
    assert body["code"] == "not_found"
    assert body["detail"] == "No route matches GET /nope"
    assert body["instance"] == "/nope"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_wrong_method_is_a_405_problem_with_allow(client: AsyncClient) -> None:
    response = await client.delete("/health/live")

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", route_paths(create_app(Settings(environment=Environment.TEST))))
async def test_every_405_allows_every_method_served_at_the_path(
    app: FastAPI, client: AsyncClient, path: str
) -> None:
    served = served_methods(app, path)
    assert served

    for method in sorted(set(METHODS) - served):
        response = await client.request(method, path)

        assert response.status_code == 405, method
        assert response.headers["allow"] == ", ".join(sorted(served))
        if method != "HEAD":
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "method_not_allowed"


async def test_invalid_body_is_a_422_problem_listing_every_error(client: AsyncClient) -> None:
    response = await client.post("/widgets", json={"name": "", "size": 0})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_error"
    assert {tuple(error["loc"]) for error in body["errors"]} == {
        ("body", "name"),
        ("body", "size"),
    }
    assert "input" not in body["errors"][0]


async def test_malformed_json_is_a_422_problem(client: AsyncClient) -> None:
    response = await client.post(
        "/widgets", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"


async def test_domain_error_is_rendered_with_its_code(client: AsyncClient) -> None:
    response = await client.post("/widgets", json={"name": "jam", "size": 1})

    assert response.status_code == 409
    body = response.json()
    assert body["type"] == "urn:problem-type:widget-jammed"
    assert body["title"] == "Widget jammed"
    assert body["code"] == "widget_jammed"
    assert body["detail"] == "The widget machine is jammed"


async def test_unexpected_exception_is_a_500_problem_without_internals(
    client: AsyncClient,
) -> None:
    response = await client.get("/crash")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text


async def test_openapi_documents_problem_responses(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    responses = schema["paths"]["/widgets"]["post"]["responses"]
    assert set(responses) == {"200", "400", "409", "422", "500"}
    assert responses["409"]["x-error-codes"] == ["widget_jammed"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    assert responses["409"]["content"]["application/problem+json"]["schema"] == problem_ref
    assert responses["422"]["content"]["application/problem+json"]["schema"] == problem_ref
    assert "Problem" in schema["components"]["schemas"]
