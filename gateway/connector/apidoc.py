"""The connector's OpenAPI document: who may call each route, and the JSON bodies it reads.

The handlers read their bodies themselves (``request.json()``) and check them by hand in
:mod:`gateway.connector.service`, so litestar cannot document them. The types below describe
the same bodies for the document only (what a client, or a fuzzer, should send); the service's
checks stay the authority. Each handler names the key it needs in its ``opt``:

- ``admin``: ``connector.admin_token`` as a bearer token (routes are open when it is unset);
- ``participant``: a participant's token, from ``POST /v1/participants``;
- ``reader``: either of the two (a PvP's view and messages; open without an admin token).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, SecurityScheme
from litestar.routes import HTTPRoute
from msgspec import Meta, Struct

from gateway.iso20022.amounts import CURRENCY_EXPONENTS, MAX_MINOR_UNITS
from gateway.problemdoc import declare_problems

Bic = Annotated[str, Meta(pattern=r"^[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?$")]
Ref = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}$")]
Account = Annotated[str, Meta(min_length=1, max_length=34)]
Currency = Annotated[str, Meta(pattern="^(" + "|".join(sorted(CURRENCY_EXPONENTS)) + ")$")]
Minor = Annotated[int, Meta(gt=0, le=MAX_MINOR_UNITS, description="Integer minor units")]


class ParticipantIn(Struct):
    bic: Bic
    currency: Currency
    endpoint: str | None = None
    """Where the connector posts the participant's messages (http or https)."""
    certificate_pem: str | None = None
    """Required with an endpoint: the participant's signing certificate."""


class InstructionSide(Struct):
    currency: Currency
    amount: Minor
    account: Account


class InstructionIn(Struct):
    instruction_id: Ref
    party_bic: Bic
    counterparty_bic: Bic
    sell: InstructionSide
    buy: InstructionSide
    value_time: datetime


class TradeSide(Struct):
    bic: Bic
    currency: Currency
    amount: Minor
    account: Account
    receive_account: Account
    reference: Ref | None = None


class TradeIn(Struct):
    value_time: datetime
    a: TradeSide
    b: TradeSide
    pvp_id: Ref | None = None


class TradesIn(Struct):
    trades: Annotated[list[TradeIn], Meta(min_length=1, max_length=1000)]


class SimAccountIn(Struct):
    account: Account
    amount: Annotated[int, Meta(ge=0, le=MAX_MINOR_UNITS)] = 0


class FaultIn(Struct):
    """A fault rule. It fires on the messages its filters match (`pvp_id`, `message_type` as
    a prefix, `destination_bic`), with `probability`, at most `count` times. On a delivery:
    `drop` (delivered again later), `delay` (`delay_ms`), `duplicate`, `reorder` (held until
    the next message has gone). At a simulated bank: `reject` (it answers RJCT `reason`),
    `outage` (its handling fails: undone, and the message delivered again). `crash_after`:
    the connector is killed at `step`."""

    kind: Literal["drop", "delay", "duplicate", "reorder", "reject", "outage", "crash_after"]
    probability: Annotated[float, Meta(ge=0, le=1)] = 1.0
    pvp_id: str | None = None
    message_type: str | None = None
    destination_bic: str | None = None
    count: int | None = None
    delay_ms: int = 0
    reason: str = "AM04"
    step: str | None = None


BODIES: dict[tuple[str, str], type[Struct]] = {
    ("POST", "/v1/participants"): ParticipantIn,
    ("POST", "/v1/instructions"): InstructionIn,
    ("POST", "/v1/trades"): TradeIn,
    ("POST", "/v1/trades/bulk"): TradesIn,
    ("POST", "/v1/sim/{currency}/accounts"): SimAccountIn,
    ("POST", "/v1/faults"): FaultIn,
}

SCHEMES = {
    "AdminToken": SecurityScheme(
        type="http",
        scheme="bearer",
        description="connector.admin_token (administrative routes are open while it is unset)",
    ),
    "ParticipantToken": SecurityScheme(
        type="http", scheme="bearer", description="A participant's token, from registration"
    ),
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "admin": [{"AdminToken": []}],
    "participant": [{"ParticipantToken": []}],
    "reader": [{"AdminToken": []}, {"ParticipantToken": []}],
}


def needs_key(handler: HTTPRouteHandler) -> bool:
    return handler.opt.get("key") in _SECURITY


def document(app: Litestar) -> None:
    """Write the keys and bodies of the connector's routes, and their refusals, into ``app``'s
    OpenAPI document."""
    schema = app.openapi_schema
    bodies, components = msgspec.json.schema_components(
        list(BODIES.values()), ref_template="#/components/schemas/{name}"
    )
    schema.components.schemas = {**(schema.components.schemas or {}), **components}
    schema.components.security_schemes = {
        **(schema.components.security_schemes or {}),
        **SCHEMES,
    }
    body_of = dict(zip(BODIES, bodies, strict=True))
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in (schema.paths or {}):
            continue
        item = (schema.paths or {})[route.path_format]
        for method, (handler, _) in route.route_handler_map.items():
            op = getattr(item, method.lower(), None)
            if not isinstance(op, Operation):
                continue
            key = handler.opt.get("key")
            op.security = _SECURITY.get(key, []) if isinstance(key, str) else []
            body: dict[str, Any] | None = body_of.get((method, route.path_format))
            if body is not None:
                op.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=body)},  # type: ignore[arg-type]
                    required=True,
                )
    declare_problems(app, needs_key)


__all__ = ["BODIES", "document", "needs_key"]
