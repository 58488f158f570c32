"""The OpenAPI document is valid and made for client generators (see ``app.core.openapi``)."""

import importlib
import pkgutil
import tomllib
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import AsyncClient
from openapi_spec_validator import validate
from starlette.routing import BaseRoute

import app as app_package
from app.core.errors import PROBLEM_MEDIA_TYPE, AppError, Problem, error_responses
from app.core.openapi import ServiceAPI, error_classes
from app.main import create_app
from app.settings import Settings
from tests.conftest import PROJECT_ROOT

type Document = dict[str, Any]  # Any: an OpenAPI document is free-form JSON

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOCUMENTATION = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture
def document(settings: Settings) -> Document:
    return create_app(settings).openapi()


def operations(document: Document) -> list[tuple[str, str, Document]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_the_document_is_valid_openapi(document: Document) -> None:
    validate(document)


async def test_the_documentation_routes_come_after_the_services_own_and_answer(
    app: FastAPI, client: AsyncClient
) -> None:
    paths = [getattr(route, "path", None) for route in app.routes]

    assert set(paths[-len(DOCUMENTATION) :]) == DOCUMENTATION
    assert DOCUMENTATION.isdisjoint(paths[: -len(DOCUMENTATION)])
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert (await client.get(path)).status_code == 200


def test_info_comes_from_the_project(document: Document) -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]

    assert document["info"]["title"] == pyproject["tool"]["service"]["title"]
    assert document["info"]["version"] == project["version"]
    assert document["info"]["description"] == project["description"]


def test_operation_ids_are_the_route_function_names(settings: Settings) -> None:
    application = create_app(settings)
    names: set[str] = set()
    pending: list[BaseRoute] = list(application.router.routes)
    while pending:  # included routers hold their routes in original_router
        route = pending.pop()
        if isinstance(route, APIRoute) and route.include_in_schema:
            names.add(route.name)
        if (included := getattr(route, "original_router", None)) is not None:
            pending.extend(included.routes)

    ids = [operation["operationId"] for _, _, operation in operations(application.openapi())]

    assert len(ids) == len(set(ids))
    assert set(ids) == names
    assert {"check_liveness", "check_readiness"} <= set(ids)


def test_two_operations_with_one_name_are_refused() -> None:
    application = ServiceAPI()

    @application.get("/a", name="same")
    async def first() -> None: ...

    @application.get("/b", name="same")
    async def second() -> None: ...

    with pytest.raises(ValueError, match="Two operations are named 'same'"):
        application.openapi()


def test_error_responses_are_problem_documents_with_their_codes(document: Document) -> None:
    catalogue = set(document["components"]["schemas"]["ErrorCode"]["enum"])
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            where = f"{method.upper()} {path} {status}"
            assert list(response["content"]) == [PROBLEM_MEDIA_TYPE], where
            media = response["content"][PROBLEM_MEDIA_TYPE]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, where
            codes = response["x-error-codes"]
            assert codes, where
            assert set(codes) <= catalogue, where
            assert set(media["examples"]) == set(codes), where
            for code, example in media["examples"].items():
                problem = Problem.model_validate(example["value"])
                assert (problem.code, problem.status) == (code, int(status)), where


def test_every_operation_documents_the_errors_any_request_can_meet(document: Document) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert "internal_error" in responses["500"]["x-error-codes"], where
        if "requestBody" in operation:
            assert "malformed_request" in responses["400"]["x-error-codes"], where
        if "requestBody" in operation or operation.get("parameters"):
            assert "validation_error" in responses["422"]["x-error-codes"], where


def test_every_response_documents_the_request_id_header(document: Document) -> None:
    reference = {"$ref": "#/components/headers/X-Request-ID"}
    assert "X-Request-ID" in document["components"]["headers"]
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            assert response["headers"]["X-Request-ID"] == reference, (method, path, status)


def test_every_parameter_is_described(document: Document) -> None:
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (method, path, parameter["name"])


def _application_error_classes() -> set[type[AppError]]:
    for module in pkgutil.walk_packages(app_package.__path__, f"{app_package.__name__}."):
        importlib.import_module(module.name)
    found: set[type[AppError]] = set()
    pending: list[type[AppError]] = [AppError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("app."):
            found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_the_application_defines_has_one_code() -> None:
    classes = _application_error_classes()
    codes = [cls.code for cls in classes]

    assert len(codes) == len(set(codes)), sorted(codes)


def test_the_catalogue_lists_every_code_a_route_or_the_router_can_give(
    document: Document,
) -> None:
    documented = {
        code
        for _, _, operation in operations(document)
        for response in operation["responses"].values()
        for code in response.get("x-error-codes", [])
    }
    catalogue = document["components"]["schemas"]["ErrorCode"]["enum"]

    assert catalogue == sorted(documented | {"not_found", "method_not_allowed"})
    problem_code = document["components"]["schemas"]["Problem"]["properties"]["code"]
    assert problem_code["$ref"] == "#/components/schemas/ErrorCode"


def test_error_classes_are_found_by_code() -> None:
    classes = error_classes()

    for cls in _application_error_classes():
        assert classes[cls.code] is cls


def test_a_route_added_later_is_documented_too(settings: Settings) -> None:
    application: FastAPI = create_app(settings)
    before = application.openapi()

    @application.get("/later", responses=error_responses(validation=True))
    async def later_route(size: int) -> int:
        return size

    after = application.openapi()

    assert "/later" not in before["paths"]
    operation = after["paths"]["/later"]["get"]
    assert operation["operationId"] == "later_route"
    assert operation["responses"]["422"]["x-error-codes"] == ["validation_error"]
