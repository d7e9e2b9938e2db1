"""The one error shape of the service: ``{"error": {"code": "...", "message": "..."}}``.

The HTTP edge (routes, dependencies, upload intake) raises :class:`app.errors.ApiError`. The core
(service, batcher, ``models``) raises domain exceptions, and :func:`http_error` is the one place
that maps each to its status, error code and headers. :func:`install_error_handlers` turns both,
FastAPI's request validation errors (422), Starlette's HTTP exceptions (404, 405, ...) and any
unexpected exception (500) into that envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.engine.failures import BatchFailed, DeadlineExceeded, NotServing, OverCapacity, QueueFull
from app.errors import ApiError
from models.detection.detector_input import UndetectableImage
from models.inference.pipeline import PipelineError
from models.pose.persons import BoxError

log = logging.getLogger("heatpose.app")


class ErrorBody(BaseModel):
    """What went wrong: a stable machine-readable ``code`` and a human ``message``."""

    code: str
    message: str


class ErrorEnvelope(BaseModel):
    """Every error response of the service."""

    error: ErrorBody


NOT_SERVING_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 while the model is loading (or the service is otherwise not ready)."""
DOMAIN_ERRORS = (
    QueueFull,
    OverCapacity,
    DeadlineExceeded,
    NotServing,
    BatchFailed,
    BoxError,
    PipelineError,
    UndetectableImage,
)
"""The core's exceptions that :func:`http_error` maps."""


def http_error(exc: Exception) -> ApiError:
    """The HTTP answer to a domain exception of the core: the one mapping.

    ===================  ======  =====================================================
    exception            status  code (headers)
    ===================  ======  =====================================================
    QueueFull            503     ``overloaded`` (``Retry-After``: its ``retry_after``)
    OverCapacity         413     ``too_many_persons``
    NotServing           503     ``not_ready`` (``Retry-After: 5``), ``shutting_down``
                                 or ``batcher_died``, after its ``state``
    DeadlineExceeded     504     ``timeout``
    BatchFailed          500     ``inference_failed``
    BoxError             422     ``invalid_boxes``
    PipelineError        422     ``no_detector`` (detect=true without a detector)
    UndetectableImage    422     ``undetectable_image`` (aspect ratio over the limit)
    ===================  ======  =====================================================
    """
    message = str(exc)
    if isinstance(exc, QueueFull):
        return ApiError(503, "overloaded", message, {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, OverCapacity):
        return ApiError(413, "too_many_persons", message)
    if isinstance(exc, NotServing):
        if exc.state == "shutting_down":
            return ApiError(503, "shutting_down", message)
        if exc.state == "failed":
            return ApiError(503, "batcher_died", message)
        return ApiError(503, "not_ready", message, {"Retry-After": str(NOT_SERVING_RETRY_AFTER_S)})
    if isinstance(exc, DeadlineExceeded):
        return ApiError(504, "timeout", message)
    if isinstance(exc, BatchFailed):
        return ApiError(500, "inference_failed", message)
    if isinstance(exc, BoxError):
        return ApiError(422, "invalid_boxes", message)
    if isinstance(exc, PipelineError):
        return ApiError(422, "no_detector", message)
    if isinstance(exc, UndetectableImage):
        return ApiError(422, "undetectable_image", message)
    raise TypeError(f"no HTTP mapping for {type(exc).__name__}")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON envelope as a response."""
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def _describe_validation(errors: list[Any]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    err = http_error(exc)
    return error_response(err.status, err.code, err.message, err.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    unknown = sorted(
        str(e["loc"][1])
        for e in errors
        if e.get("type") == "extra_forbidden" and tuple(e.get("loc", ()))[:1] == ("query",)
    )
    if unknown:  # a typo must not be silently ignored: named first, with what the route takes
        return error_response(
            422, "unknown_query_parameter", unknown_query_message(request, unknown)
        )
    return error_response(422, "invalid_request", _describe_validation(errors))


def unknown_query_message(request: Request, unknown: list[str]) -> str:
    """``unknown query parameter(s) 'x'; this route takes a, b, c``: the names of the route's
    query parameters (those of a query-parameter model counted one by one)."""
    known: set[str] = set()
    dependant = getattr(request.scope.get("route"), "dependant", None)
    todo = [dependant] if dependant is not None else []
    while todo:
        d = todo.pop()
        for param in d.query_params:
            fields = getattr(param.field_info.annotation, "model_fields", None)
            known.update(fields if isinstance(fields, dict) else [param.alias])
        todo.extend(d.dependencies)
    return (
        f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this route takes "
        f"{', '.join(sorted(known))}"
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    code = _status_code_name(exc.status_code)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and detail == "Not Found":  # no route: say which, and a near one
        near = request.url.path.rstrip("/")
        probe = {**request.scope, "path": near}
        known = near != request.url.path and any(
            r.matches(probe)[0] != Match.NONE for r in request.app.router.routes
        )
        detail = f"no route {where}" + (f" (did you mean {near}?)" if known else "")
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        allow = (exc.headers or {}).get("Allow", "")
        detail = f"{where} is not allowed" + (f"; {request.url.path} answers {allow}" * bool(allow))
    return error_response(exc.status_code, code, detail, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", f"internal error ({type(exc).__name__})")


def install_error_handlers(app: FastAPI) -> None:
    """Register the envelope handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    for kind in DOMAIN_ERRORS:
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


# OpenAPI ``responses=`` entries for the error statuses a route may answer.
ERROR_DESCRIPTIONS = {
    400: "Bad input (empty file, not an image, truncated or corrupt data)",
    401: "Missing or wrong API key",
    413: "Body, image or file count over a limit",
    415: "Unsupported media type",
    422: "Invalid parameters or boxes",
    500: "Inference failed",
    503: "Overloaded or not ready (see Retry-After)",
    504: "Request deadline passed",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status documented with the :class:`ErrorEnvelope`."""
    return {
        s: {"model": ErrorEnvelope, "description": ERROR_DESCRIPTIONS.get(s, "Error")}
        for s in statuses
    }
