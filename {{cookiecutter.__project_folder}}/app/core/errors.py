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
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

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
                    "type": "about:blank",
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

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    request_id: str | None = None
    errors: list[ValidationIssue] | None = None


class AppError(Exception):
    """Base of every error the service reports on purpose; subclasses set the class attributes."""

    status_code: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal Server Error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.title
        super().__init__(self.detail)

    @classmethod
    def type_uri(cls) -> str:
        """Identify the kind of problem; plain HTTP errors use ``about:blank`` as RFC 9457 says."""
        return f"urn:problem-type:{cls.code.replace('_', '-')}"


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


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """Render a problem document with its media type."""
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def internal_error_response(path: str) -> JSONResponse:
    """The response for an unexpected exception: nothing about its cause leaves the process."""
    return problem_response(
        Problem(
            title="Internal Server Error",
            status=HTTPStatus.INTERNAL_SERVER_ERROR,
            detail="The server failed to handle the request; the request id identifies it in logs.",
            instance=path,
            code="internal_error",
            request_id=current_request_id(),
        )
    )


async def _app_error_handler(request: Request, exc: AppError) -> JSONResponse:
    return problem_response(
        Problem(
            type=exc.type_uri(),
            title=exc.title,
            status=exc.status_code,
            detail=exc.detail,
            instance=request.url.path,
            code=exc.code,
            request_id=current_request_id(),
        )
    )


def _validation_issues(errors: Sequence[Mapping[str, Any]]) -> list[ValidationIssue]:
    # pydantic's error dicts are typed as Any; only loc, msg and type are kept, never the input.
    return [
        ValidationIssue(loc=list(error["loc"]), message=str(error["msg"]), type=str(error["type"]))
        for error in errors
    ]


async def _validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return problem_response(
        Problem(
            title="Unprocessable Content",
            status=HTTPStatus.UNPROCESSABLE_ENTITY,
            detail="The request is not valid; see errors.",
            instance=request.url.path,
            code="validation_error",
            request_id=current_request_id(),
            errors=_validation_issues(exc.errors()),
        )
    )


_HTTP_CODES = {
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
}


async def _http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = HTTPStatus(exc.status_code)
    detail = exc.detail if exc.detail != status.phrase else None
    if status is HTTPStatus.NOT_FOUND and detail is None:
        detail = f"No route matches {request.method} {request.url.path}"
    return problem_response(
        Problem(
            title=status.phrase,
            status=status,
            detail=detail,
            instance=request.url.path,
            code=_HTTP_CODES.get(status, status.phrase.lower().replace(" ", "_")),
            request_id=current_request_id(),
        ),
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app raises as problem+json."""
    # The decorator form accepts handlers typed with their own exception class.
    app.exception_handler(AppError)(_app_error_handler)
    app.exception_handler(RequestValidationError)(_validation_error_handler)
    app.exception_handler(StarletteHTTPException)(_http_error_handler)


def error_responses(
    *errors: type[AppError], validation: bool = False
) -> dict[int | str, dict[str, Any]]:
    """Describe a route's error responses for OpenAPI (FastAPI types this mapping with Any)."""
    described: dict[int, list[str]] = {}
    for error in errors:
        described.setdefault(int(error.status_code), []).append(error.title)
    if validation:
        described.setdefault(HTTPStatus.UNPROCESSABLE_ENTITY, []).append("Validation error")
    return {
        status: {
            "model": Problem,
            "description": " / ".join(titles),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, titles in sorted(described.items())
    }
