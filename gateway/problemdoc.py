"""The problem answers of an app's routes, written into its OpenAPI document.

Litestar documents a route's success answer and, for a route with parameters, a 400 in its
own error format, which is not what our apps send: every refusal is an RFC 9457
``application/problem+json`` document with a stable ``code``. Declaring the same refusals on
every route by hand would drift; this module derives them from each route's shape, once, when
the app is built, for the gateway and the connector mock alike:

=========  ==================================================================================
status     declared on
=========  ==================================================================================
400        every operation (input refused: parameters, body, NUL characters, 64-bit range)
401, 403   operations that need a key
404        operations with any input (an object it names, in the path or the body, is unknown)
409, 422   operations that change state (POST, PUT, PATCH, DELETE): a clash or a business rule
413, 415   operations with a request body (too large; not the declared media type)
503        every operation (a dependency is down; retrying may help)
=========  ==================================================================================

An app that knows which refusals each operation makes (the gateway: a catalogue per operation,
:class:`Refusal` each) passes them as ``refusals``. An operation it catalogues is documented
with exactly the statuses of its codes: those its shape implies (400 ``INVALID_INPUT``; 401
and 403 with a key; 404 ``NOT_FOUND`` for a path that matches no route, with path
parameters; 413 and 415 with a body) and the catalogued ones. Each status lists its codes in
its description and carries one example problem per code, so that a reader (and an explorer's
dropdown) sees every ``code`` it may carry.

A status a route declares itself (``responses=`` on the handler) is kept as it is when it has
content of its own (an HTML page, a signed XML refusal); declared without content (as routes
documented by hand declare them) it gets the problem schema, and its codes when catalogued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute

from gateway.errors import HTTP_STATUS_BY_KIND, GatewayError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://dt-gateway.example/problems/"
"""Every problem's ``type`` is this followed by its code in lower case."""

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    title="Problem",
    description=(
        "RFC 9457 problem details. `code` is stable and machine-readable (the ISO 20022 "
        "reason code where one exists); some problems add fields (e.g. `errors`, `wallet_id`)."
    ),
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "code": Schema(type=OpenAPIType.STRING),
    },
    required=["type", "title", "status", "detail", "code"],
)

_REASONS = {
    400: "Invalid input",
    401: "Missing or invalid key",
    403: "The key's role may not do this",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflicts with the current state (e.g. an id reused with another body)",
    413: "The body is too large",
    415: "The body is not in the declared media type",
    422: "Refused by a business rule",
    429: "Too many requests from this address (Retry-After says when to retry)",
    503: "A dependency is unavailable; retrying may help",
}
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LITESTAR_400 = "Bad request syntax or unsupported method"
_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One problem an operation may answer: its status, stable code and title, and an example
    ``detail`` (and extra fields) as the app would write them."""

    status: int
    code: str
    title: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, error: type[GatewayError], detail: str = "", **extra: Any) -> Refusal:
        """The refusal an error class maps to (its status from its kind, as the app maps it)."""
        return cls(HTTP_STATUS_BY_KIND[error.kind], error.code, error.title, detail, extra)

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.code.lower(),
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "code": self.code,
            **self.extra,
        }


INVALID_INPUT = Refusal(
    400, "INVALID_INPUT", "Invalid request", "Validation failed for GET /v1/events?limit=0"
)
INVALID_BODY = Refusal(
    400,
    "INVALID_INPUT",
    "Invalid request",
    "Invalid request body: Expected `int`, got `float` - at `$.amount`",
)
UNAUTHORIZED = Refusal(401, "UNAUTHORIZED", "Unauthorized", "missing or unknown API key")
FORBIDDEN = Refusal(403, "FORBIDDEN", "Forbidden", "this key's role may not do this")
NO_ROUTE = Refusal(
    404, "NOT_FOUND", "Not Found", "no route for this path (an empty id, or one with a slash)"
)
TOO_LARGE = Refusal(413, "TOO_LARGE", "Request Entity Too Large", "the body is too large")
UNSUPPORTED_MEDIA_TYPE = Refusal(
    415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported Media Type", "send the body as application/json"
)
RATE_LIMITED = Refusal(
    429, "RATE_LIMITED", "Too Many Requests", "too many requests from this address; retry later"
)
RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
    description="Seconds to wait before retrying",
    required=True,
)

Refusals = Callable[[str, str, HTTPRouteHandler | None], Sequence[Refusal] | None]
"""``(method, path, handler)`` -> the refusals an operation makes beyond those its shape
implies, or None for an operation not catalogued (``handler`` is None for routes documented
by hand)."""


def _problem_content(refusals: Sequence[Refusal] = ()) -> dict[str, OpenAPIMediaType]:
    examples: dict[str, Example | Reference] | None = {
        r.code: Example(summary=r.title, value=r.body()) for r in refusals
    } or None
    return {
        PROBLEM_JSON: OpenAPIMediaType(
            schema=Reference(ref="#/components/schemas/Problem"), examples=examples
        )
    }


def _problem_response(
    status: int, refusals: Sequence[Refusal], declared: OpenAPIResponse | None = None
) -> OpenAPIResponse:
    lines = "\n".join(f"- `{r.code}`: {r.title}" for r in refusals)
    description = _REASONS.get(status, "Refused") + (f". Codes:\n\n{lines}" if lines else "")
    headers = dict((declared.headers if declared else None) or {})
    if status == 429:
        headers.setdefault("Retry-After", RETRY_AFTER)
    return OpenAPIResponse(
        description=description, headers=headers or None, content=_problem_content(refusals)
    )


def declare_problems(
    app: Litestar,
    needs_key: Callable[[HTTPRouteHandler], bool],
    *,
    refusals: Refusals | None = None,
) -> None:
    """Write the refusals of every route of ``app`` into its OpenAPI document.

    ``needs_key``: whether a handler answers 401 and 403. An operation whose handler needs
    none and that has no security of its own is documented as public (``security: []``).
    ``refusals``: the operations' catalogued refusals (see :data:`Refusals`).
    """
    schema = app.openapi_schema
    components = schema.components
    components.schemas = {**(components.schemas or {}), "Problem": PROBLEM_SCHEMA}
    paths = schema.paths or {}
    done: set[int] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        item = paths[route.path_format]
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if isinstance(operation, Operation) and handler.include_in_schema:
                keyed = needs_key(handler)
                listed = refusals(method, route.path_format, handler) if refusals else None
                shape = _Shape(method, handler, operation, keyed, bool(route.path_parameters))
                if listed is None:
                    _declare(operation, shape)
                else:
                    _declare_listed(operation, [*shape.refusals(), *listed])
                done.add(id(operation))
    for path, item in paths.items():  # routes documented by hand too (ASGI handlers)
        for name in _METHODS:
            operation = getattr(item, name, None)
            if not isinstance(operation, Operation) or id(operation) in done:
                continue
            listed = refusals(name.upper(), path, None) if refusals else None
            if listed is not None:
                _declare_listed(operation, listed)
            for status, declared in (operation.responses or {}).items():
                if status[:1] in "45" and isinstance(declared, OpenAPIResponse):
                    declared.content = declared.content or _problem_content()


@dataclass(frozen=True, slots=True)
class _Shape:
    method: str
    handler: HTTPRouteHandler
    operation: Operation
    keyed: bool
    has_path: bool

    @property
    def has_body(self) -> bool:
        return (
            "data" in self.handler.parsed_fn_signature.parameters
            or self.operation.request_body is not None
        )

    def refusals(self) -> list[Refusal]:
        """The refusals every operation of this shape can make, whatever it does."""
        found = [INVALID_BODY if self.has_body else INVALID_INPUT]
        if self.keyed:
            found += [UNAUTHORIZED, FORBIDDEN]
        if self.has_path:
            found.append(NO_ROUTE)
        if self.has_body:
            found += [TOO_LARGE, UNSUPPORTED_MEDIA_TYPE]
        return found


def _declare(op: Operation, shape: _Shape) -> None:
    statuses = [400, 503]
    if shape.keyed:
        statuses += [401, 403]
    elif op.security is None:
        op.security = []
    if shape.has_path or op.parameters or shape.has_body:
        statuses.append(404)
    if shape.method in _CHANGES:
        statuses += [409, 422]
    if shape.has_body:
        statuses += [413, 415]
    responses: dict[str, Any] = dict(op.responses or {})
    for status in sorted(statuses):
        declared = responses.get(str(status))
        if declared is None or _is_litestar_default(declared):
            responses[str(status)] = _problem_response(status, ())
    op.responses = responses


def _declare_listed(op: Operation, listed: Sequence[Refusal]) -> None:
    by_status: dict[int, list[Refusal]] = {}
    for r in listed:
        codes = by_status.setdefault(r.status, [])
        if all(c.code != r.code for c in codes):
            codes.append(r)
    responses: dict[str, Any] = {
        status: declared
        for status, declared in (op.responses or {}).items()
        if not _is_litestar_default(declared)
    }
    for status, found in sorted(by_status.items()):
        declared = responses.get(str(status))
        if not isinstance(declared, OpenAPIResponse):
            declared = None
        elif declared.content and PROBLEM_JSON not in declared.content:
            continue  # an answer of its own (an HTML page, a signed XML refusal)
        responses[str(status)] = _problem_response(status, found, declared)
    if op.security is None and not any(r.status == 401 for r in listed):
        op.security = []
    op.responses = responses


def _is_litestar_default(response: Any) -> bool:
    return isinstance(response, OpenAPIResponse) and response.description == _LITESTAR_400


__all__ = [
    "FORBIDDEN",
    "INVALID_BODY",
    "INVALID_INPUT",
    "NO_ROUTE",
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "RATE_LIMITED",
    "RETRY_AFTER",
    "TOO_LARGE",
    "TYPE_BASE",
    "UNAUTHORIZED",
    "UNSUPPORTED_MEDIA_TYPE",
    "Refusal",
    "Refusals",
    "declare_problems",
]
