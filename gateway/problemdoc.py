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

A status a route declares itself (``responses=`` on the handler) is kept as it is; a refusal
declared without content (as routes documented by hand declare them) gets the problem schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute

PROBLEM_JSON = "application/problem+json"

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
    409: "Conflicts with the current state (e.g. an id reused with another body)",
    413: "The body is too large",
    415: "The body is not in the declared media type",
    422: "Refused by a business rule",
    503: "A dependency is unavailable; retrying may help",
}
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LITESTAR_400 = "Bad request syntax or unsupported method"


def _problem_content() -> dict[str, OpenAPIMediaType]:
    return {PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))}


def declare_problems(app: Litestar, needs_key: Callable[[HTTPRouteHandler], bool]) -> None:
    """Write the refusals of every route of ``app`` into its OpenAPI document.

    ``needs_key``: whether a handler answers 401 and 403. An operation whose handler needs
    none and that has no security of its own is documented as public (``security: []``).
    """
    schema = app.openapi_schema
    components = schema.components
    components.schemas = {**(components.schemas or {}), "Problem": PROBLEM_SCHEMA}
    paths = schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        item = paths[route.path_format]
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if isinstance(operation, Operation) and handler.include_in_schema:
                keyed = needs_key(handler)
                _declare(operation, method, handler, keyed, bool(route.path_parameters))
    for item in paths.values():  # routes documented by hand too (ASGI handlers)
        for operation in (item.get, item.put, item.post, item.delete, item.patch):
            for status, declared in (operation.responses or {}).items() if operation else ():
                if status[:1] in "45" and isinstance(declared, OpenAPIResponse):
                    declared.content = declared.content or _problem_content()


def _declare(
    op: Operation, method: str, handler: HTTPRouteHandler, keyed: bool, has_path: bool
) -> None:
    statuses = [400, 503]
    if keyed:
        statuses += [401, 403]
    elif op.security is None:
        op.security = []
    has_body = "data" in handler.parsed_fn_signature.parameters or op.request_body is not None
    if has_path or op.parameters or has_body:
        statuses.append(404)
    if method in _CHANGES:
        statuses += [409, 422]
    if has_body:
        statuses += [413, 415]
    responses: dict[str, Any] = dict(op.responses or {})
    for status in sorted(statuses):
        declared = responses.get(str(status))
        if declared is None or _is_litestar_default(declared):
            responses[str(status)] = OpenAPIResponse(
                description=_REASONS[status], content=_problem_content()
            )
    op.responses = responses


def _is_litestar_default(response: Any) -> bool:
    return isinstance(response, OpenAPIResponse) and response.description == _LITESTAR_400


__all__ = ["PROBLEM_JSON", "PROBLEM_SCHEMA", "declare_problems"]
