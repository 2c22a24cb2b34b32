"""The webhooks an exchange receives, declared in the OpenAPI document (OpenAPI 3.1
``webhooks``): one per event type, each a ``POST`` of the event to the exchange's endpoint,
with its body's schema and example and the two headers every delivery carries.

The event types are derived from the states they report (``mint.<MintState>``,
``redemption.<RedemptionState>``) and the test event, so a new state is documented with it;
the payload structs here mirror :func:`gateway.stablecoin.events.mint_payload` and
``redemption_payload``, and the completeness test checks that they still do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from msgspec import Meta, Struct

from gateway.api import openapi_examples_exchange as x
from gateway.api.openapi_examples import LATER
from gateway.api.schemas import TiynAmount
from gateway.stablecoin.endpoints import TEST_EVENT, event_body
from gateway.stablecoin.events import mint_payload, redemption_payload
from gateway.stablecoin.model import MintState, RedemptionState
from gateway.stablecoin.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, sign

EventId = Annotated[
    str, Meta(description="The event's id: the same on every retry and redelivery of it")
]


class MintEventData(Struct, frozen=True):
    """A mint's state as the event reports it (``GET /v1/stablecoin/mints/{mint_id}`` has the
    rest)."""

    mint_id: str
    state: MintState
    amount: TiynAmount
    source_wallet_id: str
    evm_address: str
    contract_address: str
    request_id: Annotated[str, Meta(description="The on-chain mint's request id, 0x + 64 hex")]
    tx_hash: str | None
    block_number: int | None
    error_code: Annotated[str | None, Meta(description="Why it failed (failed, refunded)")]
    idempotency_key: str


class RedemptionEventData(Struct, frozen=True):
    """A burn the watcher saw, and what became of its DT."""

    tx_hash: str
    log_index: int
    block_number: int
    redeemer: str
    amount: TiynAmount
    dt_wallet_ref: Annotated[str, Meta(description="The DT wallet the burn named")]
    state: RedemptionState
    transfer_id: Annotated[str | None, Meta(description="The DT payout (paid)")]
    reason: Annotated[str | None, Meta(description="Why it is held (held)")]


class WebhookTestData(Struct, frozen=True):
    endpoint_id: str
    message: str


class MintEvent(Struct, frozen=True):
    id: EventId
    type: Annotated[str, Meta(description="mint.<state>", pattern="^mint\\.[a-z]+$")]
    created_at: datetime
    data: MintEventData


class RedemptionEvent(Struct, frozen=True):
    id: EventId
    type: Annotated[str, Meta(description="redemption.<state>", pattern="^redemption\\.[a-z]+$")]
    created_at: datetime
    data: RedemptionEventData


class WebhookTestEvent(Struct, frozen=True):
    id: EventId
    type: Annotated[str, Meta(description="webhook.test", pattern="^webhook\\.test$")]
    created_at: datetime
    data: WebhookTestData


PAYLOADS: dict[type[Struct], type[Struct]] = {
    MintEvent: MintEventData,
    RedemptionEvent: RedemptionEventData,
    WebhookTestEvent: WebhookTestData,
}

_MINT_NEWS = {
    MintState.ACCEPTED: "Accepted: its DT moved into the segregated wallet; minting follows.",
    MintState.SUBMITTED: "Its transaction is sent but not yet confirmed (a slow chain).",
    MintState.MINTED: "The tokens are minted, confirmed on-chain.",
    MintState.FAILED: "The contract refused it for good; its DT is refunded next.",
    MintState.REFUNDED: "Its DT is back in the source wallet (error_code says why).",
}
_REDEMPTION_NEWS = {
    RedemptionState.PAID: "A burn's DT is paid into the exchange wallet it named.",
    RedemptionState.HELD: "A burn's DT is held (the wallet it named is closed or not an "
    "exchange wallet); an operator resolves it.",
}


def events() -> dict[str, tuple[type[Struct], str, dict[str, Any]]]:
    """Every event type: its payload struct, what it says, and an example ``data``."""
    found: dict[str, tuple[type[Struct], str, dict[str, Any]]] = {}
    for mint_state in MintState:
        data = mint_payload(x.mint(mint_state))
        if mint_state in (MintState.FAILED, MintState.REFUNDED):
            data["error_code"] = "ACCOUNT_BLOCKED"
        found[f"mint.{mint_state.value}"] = (MintEvent, _MINT_NEWS[mint_state], data)
    for r_state in RedemptionState:
        data = redemption_payload(x.redemption(r_state))
        found[f"redemption.{r_state.value}"] = (RedemptionEvent, _REDEMPTION_NEWS[r_state], data)
    found[TEST_EVENT] = (
        WebhookTestEvent,
        "Sent on request (POST /v1/webhooks/endpoints/{endpoint_id}/test) to that endpoint "
        "only: check your receiver verifies signatures.",
        {"endpoint_id": x.ENDPOINT_ID, "message": "a test event: verify its signature"},
    )
    return found


SIGNED_AT = 1768469405
"""The example deliveries' signing time (unix seconds)."""


def example_delivery(event_type: str) -> tuple[bytes, str]:
    """The exact body of an example delivery of ``event_type`` and its ``X-DT-Signature``
    under the example endpoint's secret at :data:`SIGNED_AT`."""
    _, _, data = events()[event_type]
    body = event_body(x.EVENT_ID, event_type, LATER, data)
    return body, sign(x.SECRET.encode(), SIGNED_AT, body)


_SIGNATURE_DOC = (
    '`t=<unix seconds>,v1=<hex HMAC-SHA256(endpoint secret, "<t>." + raw body)>`. The secret '
    "is the whole `whsec_...` text as UTF-8 bytes; compute over the body's bytes as received "
    "(not re-encoded JSON), compare in constant time and refuse a `t` more than 5 minutes "
    "from your clock. After a rotation every delivery, queued ones too, is signed with the "
    "new secret."
)
_ANSWERS = {
    "200": OpenAPIResponse(
        description=(
            "Any 2xx acknowledges the delivery. Anything else, a redirect, or no answer within "
            "stablecoin.webhook_timeout_seconds is retried with exponential backoff (0.05 s "
            "doubling up to 60 s); deliveries survive a restart of the gateway, may arrive out "
            "of order and more than once: deduplicate by X-DT-Event-Id."
        )
    )
}


def _schemas(components: Components) -> None:
    """Add the payloads' schemas to ``components`` (names already there are left as they are:
    litestar's own enum schemas, the same values)."""
    (_, defs) = msgspec.json.schema_components(
        list(PAYLOADS), ref_template="#/components/schemas/{name}"
    )
    known = components.schemas or {}
    components.schemas = {**{k: v for k, v in defs.items() if k not in known}, **known}


def declare_webhooks(components: Components) -> dict[str, PathItem | Reference]:
    """The document's ``webhooks``: one ``POST`` per event type."""
    _schemas(components)
    declared: dict[str, PathItem | Reference] = {}
    for event_type, (struct, news, _) in events().items():
        body, signature = example_delivery(event_type)
        declared[event_type] = PathItem(
            post=Operation(
                tags=["webhooks"],
                summary=f"{event_type}: {news}",
                description=(
                    "POSTed to each of the exchange's webhook endpoints "
                    "(`/v1/webhooks/endpoints`), signed with that endpoint's own secret. "
                    "The same event is listed by `GET /v1/events` and can be sent again "
                    "(`POST /v1/events/{event_id}/redeliver`).\n\n"
                    f"Example: with secret `{x.SECRET}`, the body\n\n"
                    f"    {body.decode()}\n\nsent at t={SIGNED_AT} carries "
                    f"`{SIGNATURE_HEADER}: {signature}`."
                ),
                operation_id=f"webhook_{event_type.replace('.', '_')}",
                security=[],
                parameters=[
                    Parameter(
                        name=EVENT_ID_HEADER,
                        param_in="header",
                        required=True,
                        schema=Schema(type=OpenAPIType.STRING),
                        description="The event's id; deduplicate by it",
                        examples={"example": Example(value=x.EVENT_ID)},
                    ),
                    Parameter(
                        name=SIGNATURE_HEADER,
                        param_in="header",
                        required=True,
                        schema=Schema(
                            type=OpenAPIType.STRING, pattern="^t=[0-9]+,v1=[0-9a-f]{64}$"
                        ),
                        description=_SIGNATURE_DOC,
                        examples={"example": Example(value=signature)},
                    ),
                ],
                request_body=RequestBody(
                    required=True,
                    content={
                        "application/json": OpenAPIMediaType(
                            schema=Reference(ref=f"#/components/schemas/{struct.__name__}"),
                            examples={
                                "example": Example(summary=event_type, value=msgspec.Raw(body))
                            },
                        )
                    },
                ),
                responses=dict(_ANSWERS),
            )
        )
    return declared


__all__ = [
    "PAYLOADS",
    "SIGNED_AT",
    "MintEvent",
    "MintEventData",
    "RedemptionEvent",
    "RedemptionEventData",
    "WebhookTestData",
    "WebhookTestEvent",
    "declare_webhooks",
    "events",
    "example_delivery",
]
