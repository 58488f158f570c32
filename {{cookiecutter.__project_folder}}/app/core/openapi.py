"""The OpenAPI document, finished for client generators and for people.

FastAPI writes the paths and schemas; ``ServiceAPI.openapi`` then:

- names each operation after its route function (``create_order``, not
  ``create_order_api_v1_orders_post``), so generated clients get usable method names;
- renders every error response as ``application/problem+json`` only, listing the ``code``s it
  can carry (``x-error-codes``) with one example each, and adds the errors every route can
  give (500; 400 and 422 where a request has a body or parameters);
- adds ``ErrorCode``, the catalogue of every code, and points ``Problem.code`` at it;
- documents the headers: ``X-Request-ID`` on every response, ``Retry-After`` and ``Allow``
  where an error sets them, and ``If-None-Match`` with its 304 on every GET whose 200 carries an
  ``ETag`` (``app.core.conditional.NotModifiedMiddleware`` answers them).

Route-specific headers (``Location``, ``ETag``) are declared on the route with ``header``.
"""

import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from app.core.conditional import IF_NONE_MATCH, IF_NONE_MATCH_DESCRIPTION, NOT_MODIFIED_KEEPS
from app.core.errors import (
    PROBLEM_MEDIA_TYPE,
    AppError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    ValidationFailed,
)
from app.core.logging import REQUEST_ID_HEADER

# An OpenAPI document is free-form JSON: its nodes are typed with Any, as FastAPI types them.
type Node = dict[str, Any]

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
ERROR_CODE_REF = {"$ref": "#/components/schemas/ErrorCode"}
EXAMPLE_REQUEST_ID = "4f1c2d9a8b7e4c3f9a0b1c2d3e4f5a6b"

# Errors that no route declares but any request can meet: an unknown path or method.
ROUTING_ERRORS: tuple[type[AppError], ...] = (NotFound, MethodNotAllowed)


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    """What the document says of the project, from pyproject.toml (one place to change): the
    title from ``[tool.service]``, the version and description from ``[project]``."""

    title: str
    version: str
    description: str

    @classmethod
    def read(cls, pyproject: Path = Path(__file__).parents[2] / "pyproject.toml") -> "ProjectInfo":
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        project = document["project"]
        return cls(
            title=str(document["tool"]["service"]["title"]),
            version=str(project["version"]),
            description=str(project.get("description", "")),
        )


def header(description: str, *, example: str | None = None) -> Node:
    """Describe a response header, for ``responses={201: {"headers": {...}}}``."""
    schema: Node = {"type": "string"}
    if example is not None:
        schema["examples"] = [example]
    return {"description": description, "schema": schema}


# Headers many responses carry are described once, in components.headers.
SHARED_HEADERS: dict[str, Node] = {
    REQUEST_ID_HEADER: header(
        "Identifies the request in logs; echoes a valid `X-Request-ID` the client sent.",
        example=EXAMPLE_REQUEST_ID,
    ),
}
REQUEST_ID_DOC = {"$ref": f"#/components/headers/{REQUEST_ID_HEADER}"}


def error_classes() -> dict[str, type[AppError]]:
    """Every error class of the application by code (the first class defining a code wins)."""
    found: dict[str, type[AppError]] = {}

    def visit(cls: type[AppError]) -> None:
        found.setdefault(cls.code, cls)
        for subclass in cls.__subclasses__():
            visit(subclass)

    visit(AppError)
    return found


def problem_example(error: type[AppError], path: str) -> Node:
    """A problem document ``error`` could produce on ``path``."""
    example: Node = {
        "type": error.type_uri(),
        "title": error.title,
        "status": int(error.status_code),
        "detail": error.example(),
        "instance": path,
        "code": error.code,
        "request_id": EXAMPLE_REQUEST_ID,
    }
    if error is ValidationFailed:
        example["errors"] = [
            {
                "loc": ["body", "items", 0, "quantity"],
                "message": "Input should be greater than or equal to 1",
                "type": "greater_than_equal",
            }
        ]
    return example


def _automatic_errors(route: APIRoute) -> Iterator[type[AppError]]:
    yield AppError  # the 500 of an unexpected exception
    if route.body_field is not None:
        yield MalformedRequest
    if route.body_field is not None or route.dependant.query_params or route.dependant.path_params:
        yield ValidationFailed
    if route.dependant.header_params or route.dependant.cookie_params:
        yield ValidationFailed


def _error_response(errors: list[type[AppError]], path: str, declared: Node) -> Node:
    headers: Node = {REQUEST_ID_HEADER: REQUEST_ID_DOC}
    for error in errors:
        for name, description in error.documented_headers.items():
            headers.setdefault(name, header(description))
    titles = " / ".join(dict.fromkeys(error.title for error in errors))
    codes = ", ".join(f"`{error.code}`" for error in errors)
    return {
        "description": f"{titles} ({codes})",
        "headers": {**declared.get("headers", {}), **headers},
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": PROBLEM_REF,
                "examples": {
                    error.code: {"summary": error.title, "value": problem_example(error, path)}
                    for error in errors
                },
            }
        },
        "x-error-codes": [error.code for error in errors],
    }


def _is_error(status: str) -> bool:
    return status.isdigit() and int(status) >= HTTPStatus.BAD_REQUEST


def _without_null(schema: Node) -> Node:
    """A parameter's schema without the ``null`` FastAPI gives optional ones: HTTP has no null
    header or query value, only an absent one (and generators would send the text "null")."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) != 1:
        return {**schema, "anyOf": kept}
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **rest}


def _add_not_modified(operation: Node) -> None:
    """A GET whose 200 carries an ``ETag`` answers ``If-None-Match`` (``NotModifiedMiddleware``):
    document the header and the 304, with the headers a 304 keeps."""
    ok = operation["responses"].get(str(int(HTTPStatus.OK)), {})
    headers: Node = ok.get("headers", {})
    if "ETag" not in headers:
        return
    operation.setdefault("parameters", []).append(
        {
            "name": IF_NONE_MATCH,
            "in": "header",
            "required": False,
            "description": IF_NONE_MATCH_DESCRIPTION,
            "schema": {"type": "string", "title": IF_NONE_MATCH},
        }
    )
    operation["responses"][str(int(HTTPStatus.NOT_MODIFIED))] = {
        "description": "Not Modified: the resource still has an ETag the client sent",
        "headers": {name: headers[name] for name in NOT_MODIFIED_KEEPS if name in headers},
    }


def _finish_operation(
    operation: Node, route: APIRoute, path: str, known: Mapping[str, type[AppError]]
) -> set[str]:
    """Finish one operation's parameters and responses; return the error codes it documents."""
    if route.methods and "GET" in route.methods:
        _add_not_modified(operation)
    for parameter in operation.get("parameters", []):
        parameter["schema"] = _without_null(parameter["schema"])
    responses: Node = operation["responses"]
    by_status: dict[str, list[type[AppError]]] = {}
    for status, response in responses.items():
        if _is_error(status):
            # A 422 FastAPI added by itself carries no codes: it is the validation error.
            codes = response.get("x-error-codes", [ValidationFailed.code])
            by_status.setdefault(status, []).extend(known[code] for code in codes)
    for error in _automatic_errors(route):
        by_status.setdefault(str(int(error.status_code)), []).append(error)
    for status, response in responses.items():
        if not _is_error(status):
            response.setdefault("headers", {})[REQUEST_ID_HEADER] = REQUEST_ID_DOC
    for status, errors in by_status.items():
        unique = list(dict.fromkeys(errors))
        responses[status] = _error_response(unique, path, responses.get(status, {}))
    operation["responses"] = dict(sorted(responses.items()))
    return {error.code for errors in by_status.values() for error in errors}


def finish_document(document: Node, routes: Sequence[BaseRoute]) -> Node:
    """Apply the rules in this module's docstring to a document FastAPI generated."""
    known = error_classes()
    by_operation: dict[tuple[str, str | None], APIRoute] = {
        (method.lower(), context.path_format): context.original_route
        for context in iter_route_contexts(routes)
        if isinstance(context.original_route, APIRoute)
        for method in context.methods or ()
    }
    operation_ids: dict[str, str] = {}
    used: set[str] = {error.code for error in ROUTING_ERRORS}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            route = by_operation[method, path]
            operation["operationId"] = route.name
            if (taken := operation_ids.setdefault(route.name, path)) != path:
                msg = f"Two operations are named {route.name!r} ({taken}, {path}): rename one"
                raise ValueError(msg)
            used |= _finish_operation(operation, route, path, known)
    components: Node = document.setdefault("components", {})
    components.setdefault("headers", {}).update(SHARED_HEADERS)
    schemas: Node = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    catalogue = sorted(used)
    schemas["ErrorCode"] = {
        "type": "string",
        "title": "ErrorCode",
        "enum": catalogue,
        "description": "Every `code` a problem response can carry:\n\n"
        + "\n".join(
            f"- `{code}` ({int(known[code].status_code)}): {known[code].title}"
            for code in catalogue
        ),
    }
    schemas["Problem"]["properties"]["code"] = {
        **ERROR_CODE_REF,
        "description": schemas["Problem"]["properties"]["code"].get("description", ""),
    }
    return document


class ServiceAPI(FastAPI):
    """FastAPI with the finished OpenAPI document (cached like FastAPI's, rebuilt when routes
    change)."""

    _finished: Node | None = None

    def setup(self) -> None:
        """Add nothing yet. FastAPI calls this from ``__init__`` to add its documentation
        routes (the OpenAPI document, Swagger UI, ReDoc), which would put them before every
        route of the service, and each route tried before the one that answers costs a read
        about 2% of its CPU: ``add_documentation_routes`` adds them after the service's own."""

    def add_documentation_routes(self) -> None:
        """Add FastAPI's documentation routes; call it once the service's routes are in."""
        super().setup()

    def openapi(self) -> Node:
        document = super().openapi()
        if document is not self._finished:
            document = finish_document(document, self.routes)
            self.openapi_schema = self._finished = document
        return document
