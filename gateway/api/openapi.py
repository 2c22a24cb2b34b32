"""The gateway's OpenAPI document, completed: examples, refusals and webhooks.

Litestar derives the document from the routes' signatures. This module adds, once, when the app
is built, what signatures cannot say, from one table per audience
(:mod:`gateway.api.openapi_examples`, ``..._exchange``, ``..._public``), keyed
``"METHOD /path"``:

- a request and an answer example for each operation (and an example of each parameter);
- every refusal as an RFC 9457 problem, one example per code (:func:`refusals`, which the app
  passes to :func:`gateway.problemdoc.declare_problems`);
- the webhooks an exchange receives (:mod:`gateway.api.openapi_webhooks`);
- an example on every amount in tiyn that has none.

An operation missing from the tables keeps litestar's document and the refusals its shape
implies; the completeness test (``tests/integration/api/test_openapi_document.py``) fails on it.

Example values are encoded to JSON here (``msgspec.Raw``): litestar's document drops ``None``
from plain dicts, and an example whose ``null`` fields vanished would not match its schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Example,
    OpenAPIResponse,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from gateway.api.openapi_examples import LEDGER, PARTNER, Documented, Refused
from gateway.api.openapi_examples_exchange import STABLECOIN, WEBHOOKS
from gateway.api.openapi_examples_public import PUBLIC
from gateway.api.openapi_webhooks import declare_webhooks
from gateway.api.ratelimit import limit_by_address
from gateway.api.schemas import TIYN_EXAMPLE
from gateway.problemdoc import RATE_LIMITED, Refusal

OPERATIONS: dict[str, Documented] = {**LEDGER, **PARTNER, **PUBLIC, **STABLECOIN, **WEBHOOKS}
"""Every operation's examples and refusals, by ``"METHOD /path"``."""

_METHODS = ("get", "put", "post", "delete", "patch")


def example(value: Any) -> Example:
    """An example whose value is written as given: text as text, anything else as JSON."""
    if isinstance(value, str):
        return Example(value=value)
    return Example(value=msgspec.Raw(msgspec.json.encode(value)))


def refusal(r: Refused) -> Refusal:
    return r if isinstance(r, Refusal) else Refusal.of(r)


def refusals(
    method: str, path: str, handler: HTTPRouteHandler | None = None
) -> Sequence[Refusal] | None:
    """The catalogued refusals of one operation (:data:`gateway.problemdoc.Refusals`): those
    beyond what its shape implies, which :func:`gateway.problemdoc.declare_problems` adds."""
    doc = OPERATIONS.get(f"{method} {path}")
    if doc is None:
        return None
    found = [refusal(r) for r in doc.refusals]
    if handler is not None and _limited_by_address(handler):
        found.append(RATE_LIMITED)  # the public routes' own bucket per client address
    return found


def _limited_by_address(handler: HTTPRouteHandler) -> bool:
    # resolve_guards() wraps each guard: look at the layers' own lists.
    return any(limit_by_address in (layer.guards or ()) for layer in handler.ownership_layers)


def complete(app: Litestar) -> None:
    """Write the examples and the webhooks into ``app``'s OpenAPI document (after
    :func:`gateway.problemdoc.declare_problems`, so that the refusals' answers are there)."""
    schema = app.openapi_schema
    for path, item in (schema.paths or {}).items():
        for method in _METHODS:
            op = getattr(item, method, None)
            doc = OPERATIONS.get(f"{method.upper()} {path}")
            if isinstance(op, Operation) and doc is not None:
                _examples(op, doc)
    schema.webhooks = declare_webhooks(schema.components)
    for component in (schema.components.schemas or {}).values():
        if isinstance(component, Schema):
            _amount_examples(component)


def _examples(op: Operation, doc: Documented) -> None:
    if doc.request is not None and isinstance(op.request_body, RequestBody):
        for media in (op.request_body.content or {}).values():
            media.examples = {"example": example(doc.request)}
    for p in op.parameters or ():
        if isinstance(p, Parameter) and p.name in doc.parameters:
            p.examples = {"example": example(doc.parameters[p.name])}
    for status, value in doc.responses.items():
        answer = (op.responses or {}).get(str(status))
        if isinstance(answer, OpenAPIResponse):
            for media in (answer.content or {}).values():
                media.examples = {"example": example(value)}


def _amount_examples(schema: Schema) -> None:
    """An example for each integer property described in tiyn that has none (schemas whose
    fields are not :data:`gateway.api.schemas.TiynAmount`)."""
    for prop in (schema.properties or {}).values():
        if not isinstance(prop, Schema):
            continue
        described = (prop.description or "").lower()
        if "tiyn" in described and not prop.examples and _is_integer(prop):
            prop.examples = [TIYN_EXAMPLE]


def _is_integer(prop: Schema) -> bool:
    if prop.type == "integer":
        return True
    return any(isinstance(o, Schema) and o.type == "integer" for o in prop.one_of or ())


__all__ = ["OPERATIONS", "complete", "example", "refusals"]
