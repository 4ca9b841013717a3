"""Polar's error shapes: 422 {"detail": [{loc, msg, type}]}, 404 {"error": "ResourceNotFound"}.

The one place where domain errors (`core.errors.DomainError`, whose problems name fields inside
the input) become wire errors: a problem's field gets its location — `path` when it names one of
the URL's parameters, else `body` — and Polar's 422 shape. An app's API layer may register a
domain error that Polar answers with another status (`register_domain_error`)."""

import logging
import sys

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from django.views.defaults import bad_request, page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response

from core.errors import DomainError, ErrorList

logger = logging.getLogger(__name__)


class PolarValidationError(exceptions.APIException):
    status_code = 422
    default_detail = "Validation error"
    default_code = "validation_error"

    def __init__(self, items: list[dict]):
        self.items = items
        super().__init__(detail="Validation error")

    @classmethod
    def single(cls, loc, msg: str, type_: str = "value_error") -> "PolarValidationError":
        errors = ErrorList()
        errors.add(loc, msg, type_)
        return cls(errors.items)


class ResourceNotFound(exceptions.NotFound):
    pass


# DomainError subclass → (HTTP status, Polar's error name), for the few refusals Polar does not
# answer with a 422 (e.g. revoking an already canceled subscription: 403)
_SPECIAL_DOMAIN_ERRORS: dict[type, tuple[int, str]] = {}


def register_domain_error(error_class: type[DomainError], *, status_code: int, error: str) -> None:
    _SPECIAL_DOMAIN_ERRORS[error_class] = (status_code, error)


def wire_problems(exc: DomainError, path_params=()) -> list[dict]:
    """The domain's problems with their location added: Polar's `loc`."""
    items = []
    for item in exc.items:
        loc = list(item["loc"])
        location = "path" if loc and loc[0] in path_params else "body"
        items.append({**item, "loc": [location, *loc]})
    return items


def _domain_error_response(exc: DomainError, context) -> Response:
    for klass in type(exc).__mro__:
        if klass in _SPECIAL_DOMAIN_ERRORS:
            status_code, error = _SPECIAL_DOMAIN_ERRORS[klass]
            return _error(status_code, error, exc.message)
    path_params = set((context or {}).get("kwargs") or {})
    return Response({"detail": wire_problems(exc, path_params)}, status=422)


# DRF's error codes → the error types Polar's (pydantic's) 422 bodies use
POLAR_ERROR_TYPES = {
    "required": "missing",
    "null": "missing",
    "blank": "string_too_short",
    "max_length": "string_too_long",
    "min_length": "string_too_short",
    "invalid_choice": "enum",
    "max_value": "less_than_equal",
    "min_value": "greater_than_equal",
    "max_string_length": "string_too_long",
}


def _polar_type(detail) -> str:
    code = getattr(detail, "code", None) or "value_error"
    return POLAR_ERROR_TYPES.get(code, code)


def _flatten_drf_errors(detail, loc: list) -> list[dict]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            sub = loc if key == "non_field_errors" else [*loc, key]
            out.extend(_flatten_drf_errors(value, sub))
        return out
    if isinstance(detail, list):
        if all(isinstance(d, exceptions.ErrorDetail | str) for d in detail):
            return [{"loc": loc, "msg": str(d), "type": _polar_type(d)} for d in detail]
        out = []
        for index, value in enumerate(detail):
            if value:
                out.extend(_flatten_drf_errors(value, [*loc, index]))
        return out
    return [{"loc": loc, "msg": str(detail), "type": _polar_type(detail)}]


def _byte_size(count: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit} ({count} bytes)"
    return f"{count} bytes"


def request_too_large_detail() -> str:
    """The 413 message, naming the limit so a client knows how to split its batch."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return f"Request body is too large: the limit is {_byte_size(limit)}."


def request_too_large_response() -> JsonResponse:
    return JsonResponse(
        {"error": "RequestTooLarge", "detail": request_too_large_detail()}, status=413
    )


def length_required_response() -> JsonResponse:
    return JsonResponse(
        {
            "error": "LengthRequired",
            "detail": "This server cannot read a chunked request body; send a Content-Length.",
        },
        status=411,
    )


def _error(status_code: int, error: str, detail: str, headers=None) -> Response:
    response = Response({"error": error, "detail": detail}, status=status_code)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def polar_exception_handler(exc, context):
    if isinstance(exc, PolarValidationError):
        return Response({"detail": exc.items}, status=422)
    if isinstance(exc, DomainError):
        return _domain_error_response(exc, context)
    if isinstance(exc, exceptions.ValidationError):
        location = getattr(exc, "location", "body")
        return Response({"detail": _flatten_drf_errors(exc.detail, [location])}, status=422)
    if isinstance(exc, Http404 | exceptions.NotFound):
        detail = str(getattr(exc, "detail", "")) or "Not found."
        return _error(404, "ResourceNotFound", detail)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return _error(401, "Unauthorized", str(exc.detail), {"WWW-Authenticate": "Bearer"})
    if isinstance(exc, PermissionDenied | exceptions.PermissionDenied):
        return _error(403, "NotPermitted", str(getattr(exc, "detail", exc)) or "Not permitted.")
    if isinstance(exc, RequestDataTooBig):
        return _error(413, "RequestTooLarge", request_too_large_detail())
    if isinstance(exc, exceptions.ParseError):
        return _error(400, "BadRequest", str(exc.detail))
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return _error(415, "UnsupportedMediaType", str(exc.detail))
    if isinstance(exc, exceptions.MethodNotAllowed):
        return _error(405, "MethodNotAllowed", str(exc.detail))
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait or 1)
        return _error(429, "TooManyRequests", str(exc.detail), {"Retry-After": str(wait)})
    if isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) in (
        "40P01",
        "40001",
    ):
        # a concurrency conflict that survived the service's retries: safe to resend as is
        return _error(
            503, "ServiceUnavailable", "Concurrent update conflict; retry.", {"Retry-After": "1"}
        )
    if isinstance(exc, exceptions.APIException):
        return _error(exc.status_code, exc.__class__.__name__, str(exc.detail))
    return None


class QueryValidationError(exceptions.ValidationError):
    location = "query"


def not_found_response() -> JsonResponse:
    return JsonResponse({"error": "ResourceNotFound", "detail": "Not found."}, status=404)


def json_not_found(request, exception=None):
    if request.path.startswith("/v1/"):
        return not_found_response()
    return page_not_found(request, exception)


# seconds a client is told to wait when the database is unreachable (a restart, a failover)
DATABASE_RETRY_AFTER_SECONDS = 5

DATABASE_UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title></head>
<body><h1>Temporarily unavailable</h1>
<p>The service lost its database connection. Please try again in a few seconds.</p></body></html>
"""


def database_unavailable_response(request) -> HttpResponse:
    """A lost or refused database connection is temporary: 503 with Retry-After, not a 500."""
    if request.path.startswith("/v1/"):
        response = JsonResponse(
            {
                "error": "ServiceUnavailable",
                "detail": "The database is unavailable; retry the request.",
            },
            status=503,
        )
    else:
        response = HttpResponse(DATABASE_UNAVAILABLE_PAGE, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def json_server_error(request):
    # Django calls the 500 handler while handling the uncaught exception, so it can be read here;
    # every layer's error (a view's, a middleware's, the session save) passes through this one place
    error = sys.exc_info()[1]
    if isinstance(error, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s", error)
        return database_unavailable_response(request)
    if request.path.startswith("/v1/"):
        return JsonResponse(
            {"error": "InternalServerError", "detail": "Internal server error."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return server_error(request)


def json_bad_request(request, exception=None):
    if request.path.startswith("/v1/"):
        if isinstance(exception, RequestDataTooBig):
            return request_too_large_response()
        return JsonResponse({"error": "BadRequest", "detail": "Bad request."}, status=400)
    return bad_request(request, exception)
