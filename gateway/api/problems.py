"""The one place where errors become HTTP responses: RFC 9457 ``application/problem+json``.

Every body has ``type``, ``title``, ``status``, ``detail`` and a stable machine-readable
``code``; domain errors add their ``extra`` fields (e.g. ``operation_index``, ``wallet_id``).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gateway.errors import HTTP_STATUS_BY_KIND, GatewayError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://dt-gateway.example/problems/"


_CODE_BY_STATUS = {
    400: "INVALID_INPUT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[Any]:
    body = {
        "type": TYPE_BASE + code.lower(),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def gateway_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, GatewayError)
    status = HTTP_STATUS_BY_KIND[exc.kind]
    if status >= 500:
        log.warning("%s: %s", exc.code, exc.detail)
    detail = exc.detail if exc.detail_is_public else exc.title
    return problem(status, exc.code, exc.title, detail, **exc.extra)


def http_error_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        return problem(400, "INVALID_INPUT", "Invalid request", str(exc.detail), errors=errors)
    code = _CODE_BY_STATUS.get(status, "HTTP_ERROR" if status < 500 else "INTERNAL_ERROR")
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = str(exc.detail)
    # Headers the exception carries stay (Allow on a 405, Retry-After on a 429 ...).
    return problem(status, code, title, str(exc.detail), headers=exc.headers)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "INTERNAL_ERROR", "Internal error", "the gateway failed; nothing was lost")


EXCEPTION_HANDLERS = {
    GatewayError: gateway_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem"]
