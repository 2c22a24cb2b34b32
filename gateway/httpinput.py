"""Input that no database column can hold, refused at the HTTP edge with a 400 problem.

The same on SQLite and PostgreSQL, instead of failing in a store: PostgreSQL refuses NUL
characters in text and integers beyond 64 bits with ``DataError`` (a 500); SQLite raises
``OverflowError`` for the latter and stores the former. Refused here:

- a NUL character in the path (so in any path id) or in the query string;
- an integer path or query parameter outside the signed 64-bit range;
- a body sent to a JSON route as anything but JSON: 415 (``text/plain``, XML, a form, or no
  ``Content-Type`` at all), so a body is never read as something it was not sent as;
- a NUL character in any string (or key) of a JSON body.

:func:`refuse_unstorable_input` is a litestar guard for an app's ``guards``, so that every
route gets it, including routes added later; it checks the bodies of handlers that take JSON
``data``. An app whose handlers read the body themselves (the connector mock) calls
:func:`check_json_body` where it does. Lengths are the request schemas' business.

Used by the gateway and by the connector mock alike, so it imports nothing of either.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from litestar.connection import ASGIConnection, Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler
from litestar.params import BodyKwarg, ParameterKwarg

from gateway.errors import InvalidInput

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NUL_ESCAPE = b"\\u0000"
"""The only way a NUL character can be written in JSON (a raw one is malformed JSON)."""


class UnsupportedMediaType(HTTPException):
    status_code = 415


@cache
def _int_queries(handler: HTTPRouteHandler) -> tuple[tuple[str, str], ...]:
    """(parameter, query key) of the handler's integer parameters that can come from the query
    (a path parameter of the same name is checked on its parsed value instead)."""
    dependencies = set(handler.resolve_dependencies())
    found: list[tuple[str, str]] = []
    for name, field in handler.parsed_fn_signature.parameters.items():
        if name in dependencies or not _is_int(field):
            continue
        kwarg = field.kwarg_definition
        if kwarg is None:
            found.append((name, name))
        elif isinstance(kwarg, ParameterKwarg) and not (kwarg.header or kwarg.cookie):
            found.append((name, kwarg.query or name))
    return tuple(found)


def _is_int(field: Any) -> bool:
    types = [t for t in field.inner_types if t.annotation is not type(None)] or [field]
    return any(
        isinstance(t.annotation, type)
        and issubclass(t.annotation, int)
        and not issubclass(t.annotation, bool)
        for t in types
    )


@cache
def _json_body(handler: HTTPRouteHandler) -> bool:
    """Whether the handler reads a JSON body (``data``, with no other media type)."""
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return False
    kwarg = field.kwarg_definition
    return not isinstance(kwarg, BodyKwarg) or kwarg.media_type == RequestEncodingType.JSON


async def refuse_unstorable_input(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    if not isinstance(handler, HTTPRouteHandler):
        return
    scope = connection.scope
    if "\x00" in scope["path"]:
        raise InvalidInput("the path contains a NUL character")
    query = scope.get("query_string", b"")
    if query and b"%00" in query:
        raise InvalidInput("the query string contains a NUL character")
    for name, value in connection.path_params.items():
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput(f"{name} must be an integer from {INT64_MIN} to {INT64_MAX}")
    if query:
        for name, key in _int_queries(handler):
            if name not in connection.path_params:
                for raw in connection.query_params.getall(key, ()):
                    _check_int64(key, raw)
    if (
        isinstance(connection, Request)
        and connection.method in _BODY_METHODS
        and _json_body(handler)
    ):
        await check_json_body(connection)


def _check_int64(name: str, raw: str) -> None:
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if digits.isdecimal() and len(digits) >= 19 and not INT64_MIN <= int(text) <= INT64_MAX:
        raise InvalidInput(f"{name} must be an integer from {INT64_MIN} to {INT64_MAX}")


async def check_json_body(request: Request[Any, Any, Any]) -> None:
    """415 unless a body (if any) is sent as JSON; 400 if a string in it holds a NUL."""
    headers = request.headers
    length = headers.get("content-length")
    if length == "0" or (length is None and "transfer-encoding" not in headers):
        return  # no body: whether one is required is the handler's business
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType(
            detail="send the body as JSON, with Content-Type: application/json"
        )
    body = await request.body()
    if _NUL_ESCAPE in body:
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return  # malformed: the body's own validation says so
        where = _nul_in(decoded, "$")
        if where is not None:
            raise InvalidInput(f"{where} contains a NUL character")


def _nul_in(value: Any, where: str) -> str | None:
    """The JSON path of the first string (or key) holding a NUL character, if any."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_in(item, f"{where}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return f"{where} (a key)"
            found = _nul_in(item, f"{where}.{key}")
            if found is not None:
                return found
    return None


__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "UnsupportedMediaType",
    "check_json_body",
    "refuse_unstorable_input",
]
