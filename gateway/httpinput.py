"""Input that no database column can hold, refused at the HTTP edge with a 400 problem.

The same on SQLite and PostgreSQL, instead of failing in a store: PostgreSQL refuses NUL
characters in text and integers beyond 64 bits with ``DataError`` (a 500); SQLite raises
``OverflowError`` for the latter and stores the former. Refused here:

- a NUL character in the path (so in any path id) or in the query string;
- an integer path or query parameter outside the signed 64-bit range;
- a body sent to a JSON route as anything but JSON: 415 (``text/plain``, XML, a form, or no
  ``Content-Type`` at all), so a body is never read as something it was not sent as;
- a NUL character in any string (or key) of a JSON body;
- a JSON body nested more than :data:`MAX_DEPTH` arrays or objects deep.

:func:`refuse_unstorable_input` is a litestar guard for an app's ``guards``, so that every
route gets it, including routes added later; it checks the bodies of handlers that take JSON
``data``. An app whose handlers read the body themselves (the connector mock) calls
:func:`check_json_body` where it does. Lengths are the request schemas' business.

Used by the gateway and by the connector mock alike, so it imports nothing of either.
"""

from __future__ import annotations

import re
from array import array
from functools import cache
from itertools import accumulate
from typing import Any

import anyio.to_thread
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
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""The escape itself, not an escaped backslash followed by ``u0000``: an odd number of
backslashes before the ``u``. Found in the bytes, without decoding, so that no depth of
nesting reaches a decoder here."""
MAX_DEPTH = 32
"""Arrays and objects nested deeper are refused before any decoder sees them.

The gateway's process runs with a recursion limit of 100,000 (``py_ecc`` sets it when the
chain client loads), and msgspec, decoding into ``Any``, then recurses until it overflows the
C stack (a crash, not an exception) on a body of 100,000 ``[``. No request body of either app
nests more than a few levels."""


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
    """415 unless a body (if any) is sent as JSON; 400 if a string in it holds a NUL or it
    nests too deep."""
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
    # The scans are linear but in Python's regex engine: a large body's go to a worker
    # thread, so that the event loop keeps serving others meanwhile.
    if len(body) > _INLINE_SCAN:
        refusal = await anyio.to_thread.run_sync(_refusal, body)
    else:
        refusal = _refusal(body)
    if refusal is not None:
        raise InvalidInput(refusal)


_INLINE_SCAN = 64 * 1024


def _refusal(body: bytes) -> str | None:
    if _NUL_ESCAPE in body and _NUL.search(body):
        return "a string in the body contains a NUL character (\\u0000)"
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(body):
        return f"the body nests arrays or objects more than {MAX_DEPTH} deep"
    return None


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
"""Opening brackets to +1, closing ones to -1 (as signed bytes)."""


def _too_deep(body: bytes) -> bool:
    """Whether the brackets outside strings nest more than :data:`MAX_DEPTH` deep: the
    highest running sum of +1 per opening and -1 per closing one, all in C loops."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    depths = accumulate(array("b", brackets.translate(_SIGNS)))
    return max(depths, default=0) > MAX_DEPTH


__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "UnsupportedMediaType",
    "check_json_body",
    "refuse_unstorable_input",
]
