"""One error hierarchy, rendered as RFC 9457 ``application/problem+json``.

Services raise ``AppError`` subclasses (never ``HTTPException``); the handlers installed by
``install_error_handlers`` turn those, validation errors and unknown routes or methods into
problem documents that carry the request id. Unexpected exceptions become a bare 500 problem
in ``app.core.logging.RequestContextMiddleware``: the client never sees a stack trace.
"""

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core.context import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ValidationIssue(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(examples=[["body", "items", 0, "quantity"]])
    message: str = Field(examples=["Input should be greater than or equal to 1"])
    type: str = Field(examples=["greater_than_equal"])


class Problem(BaseModel):
    """An RFC 9457 problem document, extended with a stable ``code`` and the request id."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:problem-type:not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "No route matches GET /nope",
                    "instance": "/nope",
                    "code": "not_found",
                    "request_id": "4f1c2d9a8b7e4c3f9a0b1c2d3e4f5a6b",
                }
            ]
        }
    )

    type: str = Field(description="A URN naming the kind of problem; one per `code`.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str = Field(description="Stable, machine-readable; the catalogue is `ErrorCode`.")
    request_id: str | None = Field(
        default=None, description="The `X-Request-ID` of the request, for support and logs."
    )
    errors: list[ValidationIssue] | None = Field(
        default=None, description="Every invalid part of the request (`validation_error` only)."
    )


class AppError(Exception):
    """Base of every error the service reports on purpose; subclasses set the class attributes."""

    status_code: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal Server Error"
    # The ``detail`` of this error's example in the OpenAPI document; not inherited (a class
    # without its own shows its title).
    example_detail: ClassVar[str | None] = (
        "The server failed to handle the request; the request id identifies it in logs."
    )
    # Response headers this kind of error carries, with their description (for OpenAPI).
    documented_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self, detail: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.detail = detail or self.title
        # Response headers that belong to the error (Retry-After of a 503).
        self.headers = headers
        super().__init__(self.detail)

    @classmethod
    def type_uri(cls) -> str:
        """Identify the kind of problem: one URN per ``code``."""
        return f"urn:problem-type:{cls.code.replace('_', '-')}"

    @classmethod
    def example(cls) -> str:
        """The ``detail`` of this error's example: its own ``example_detail``, or its title."""
        own: str | None = vars(cls).get("example_detail")
        return own or cls.title


class BadRequest(AppError):
    status_code = HTTPStatus.BAD_REQUEST
    code = "bad_request"
    title = "Bad Request"


class NotFound(AppError):
    status_code = HTTPStatus.NOT_FOUND
    code = "not_found"
    title = "Not Found"


class Conflict(AppError):
    status_code = HTTPStatus.CONFLICT
    code = "conflict"
    title = "Conflict"


class ServiceUnavailable(AppError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    code = "service_unavailable"
    title = "Service Unavailable"


# The errors the framework itself reports; every code a response can carry has a class here or
# in a domain, so the OpenAPI catalogue (``app.core.openapi``) is complete by construction.


class MalformedRequest(BadRequest):
    code = "malformed_request"
    title = "Malformed request"
    example_detail = "There was an error parsing the body"


class MethodNotAllowed(AppError):
    status_code = HTTPStatus.METHOD_NOT_ALLOWED
    code = "method_not_allowed"
    title = "Method Not Allowed"
    documented_headers: ClassVar[Mapping[str, str]] = {"Allow": "The methods this path serves."}


class ValidationFailed(AppError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"
    title = "Unprocessable Content"
    example_detail = "The request is not valid; see errors."


class HTTPStatusError(AppError):
    """Any other HTTP error status the framework raises (the status says which)."""

    code = "http_error"
    title = "HTTP error"


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """Render a problem document with its media type."""
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def error_problem(
    error: type[AppError],
    *,
    detail: str | None,
    instance: str | None,
    status: int | None = None,
    title: str | None = None,
) -> Problem:
    """The problem document of ``error`` (the single place that shapes one)."""
    return Problem(
        type=error.type_uri(),
        title=title or error.title,
        status=status or error.status_code,
        detail=detail,
        instance=instance,
        code=error.code,
        request_id=current_request_id(),
    )


def internal_error_response(path: str) -> JSONResponse:
    """The response for an unexpected exception: nothing about its cause leaves the process."""
    return problem_response(error_problem(AppError, detail=AppError.example(), instance=path))


def app_error_response(exc: AppError, path: str) -> JSONResponse:
    """The problem response of an error raised on purpose (also used by middleware)."""
    return problem_response(
        error_problem(type(exc), detail=exc.detail, instance=path), headers=exc.headers
    )


async def _app_error_handler(request: Request, exc: AppError) -> JSONResponse:
    return app_error_response(exc, request.url.path)


def _validation_issues(errors: Sequence[Mapping[str, Any]]) -> list[ValidationIssue]:
    # pydantic's error dicts are typed as Any; only loc, msg and type are kept, never the input.
    return [
        ValidationIssue(loc=list(error["loc"]), message=str(error["msg"]), type=str(error["type"]))
        for error in errors
    ]


async def _validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    problem = error_problem(
        ValidationFailed, detail=ValidationFailed.example(), instance=request.url.path
    )
    problem.errors = _validation_issues(exc.errors())
    return problem_response(problem)


_HTTP_ERRORS: dict[int, type[AppError]] = {
    HTTPStatus.BAD_REQUEST: MalformedRequest,
    HTTPStatus.NOT_FOUND: NotFound,
    HTTPStatus.METHOD_NOT_ALLOWED: MethodNotAllowed,
}


def allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path, for the ``Allow`` of a 405.

    Starlette's router answers with the methods of the first route that matches the path only;
    another route at the same path (``GET`` and ``POST /orders``) would be left out.
    """
    methods: set[str] = set()
    # Included routers are branches of app.routes; iter_route_contexts walks their routes.
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods.update(route.methods)
    return ", ".join(sorted(methods))


async def _http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = HTTPStatus(exc.status_code)
    error = _HTTP_ERRORS.get(status, HTTPStatusError)
    detail = exc.detail if exc.detail != status.phrase else None
    headers = exc.headers
    if status is HTTPStatus.NOT_FOUND and detail is None:
        detail = f"No route matches {request.method} {request.url.path}"
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    problem = error_problem(
        error,
        detail=detail,
        instance=request.url.path,
        status=status,
        title=status.phrase if error is HTTPStatusError else None,
    )
    return problem_response(problem, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app raises as problem+json."""
    # The decorator form accepts handlers typed with their own exception class.
    app.exception_handler(AppError)(_app_error_handler)
    app.exception_handler(RequestValidationError)(_validation_error_handler)
    app.exception_handler(StarletteHTTPException)(_http_error_handler)


def error_responses(
    *errors: type[AppError], validation: bool = False
) -> dict[int | str, dict[str, Any]]:
    """Declare the errors a route raises, for its OpenAPI responses.

    ``app.core.openapi`` turns each status into an ``application/problem+json`` response that
    lists its codes (``x-error-codes``) with an example each; it also adds the errors every route
    can give (500, and 400/422 where a request has a body or parameters). FastAPI types this
    mapping with Any.
    """
    # A request's validation first: it is checked before anything else.
    listed: list[type[AppError]] = [ValidationFailed, *errors] if validation else list(errors)
    declared: dict[int, list[type[AppError]]] = {}
    for error in listed:
        declared.setdefault(int(error.status_code), []).append(error)
    return {
        status: {
            "model": Problem,
            "description": " / ".join(dict.fromkeys(error.title for error in group)),
            "x-error-codes": [error.code for error in group],
        }
        for status, group in sorted(declared.items())
    }
