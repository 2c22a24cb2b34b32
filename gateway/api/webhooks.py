"""Exchange API: webhook endpoints and the events they receive. Parse, call the endpoint
service, map to a schema; no logic.

An exchange key (role ``exchange``) acts for the exchange its ``subject`` names, and sees only
that exchange's endpoints and events. A secret appears in two answers only: the endpoint's
creation and the rotation of its secret.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any

from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta, Struct

from gateway.api.deps import role_guard
from gateway.auth import Principal, Role
from gateway.stablecoin import endpoints_service as service
from gateway.stablecoin.endpoints import Endpoint, Event, EventFilter
from gateway.stablecoin.endpoints_store import WebhookUnitOfWork

exchange_only = {"principal": Provide(role_guard(Role.EXCHANGE), sync_to_thread=False)}

SIGNING_KEY_DOC = (
    "The endpoint's signing secret: X-DT-Signature is HMAC-SHA256 under it. Shown here only "
    "(and at the next rotation): store it now."
)


class EndpointCreate(Struct, forbid_unknown_fields=True):
    url: Annotated[
        str,
        Meta(
            description=(
                "http(s) URL the exchange's events are POSTed to. Refused: other schemes, "
                "credentials in the URL, the gateway itself, link-local and metadata "
                "addresses, loopback and private networks (unless the operator allows them), "
                "more characters than allowed"
            ),
            examples=["https://hooks.exchange.example/dt"],
        ),
    ]
    description: Annotated[str, Meta(max_length=200, description="Free text, for you")] = ""


class EndpointOut(Struct, frozen=True, tag_field="object", tag="webhook_endpoint"):
    id: str
    url: str
    description: str
    created_at: datetime
    secret_rotated_at: datetime | None

    @classmethod
    def of(cls, e: Endpoint) -> EndpointOut:
        return cls(e.id, e.url, e.description, e.created_at, e.secret_rotated_at)


class EndpointWithSecret(Struct, frozen=True, tag_field="object", tag="webhook_endpoint"):
    id: str
    url: str
    description: str
    created_at: datetime
    secret_rotated_at: datetime | None
    secret: Annotated[str, Meta(description=SIGNING_KEY_DOC)]

    @classmethod
    def of(cls, e: Endpoint) -> EndpointWithSecret:
        return cls(e.id, e.url, e.description, e.created_at, e.secret_rotated_at, e.secret)


class EndpointList(Struct, frozen=True):
    endpoints: list[EndpointOut]


class EventOut(Struct, frozen=True, tag_field="object", tag="event"):
    id: Annotated[str, Meta(description="Also the X-DT-Event-Id of every delivery of it")]
    type: Annotated[
        str,
        Meta(
            description=(
                "mint.accepted, mint.submitted, mint.minted, mint.failed, mint.refunded, "
                "redemption.paid, redemption.held, webhook.test"
            )
        ),
    ]
    created_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(e.id, e.type, e.created_at, e.data)


class EventPage(Struct, frozen=True):
    events: list[EventOut]
    next_cursor: Annotated[int | None, Meta(description="Pass as cursor for the next page")]


class RedeliveryOut(Struct, frozen=True, tag_field="object", tag="redelivery"):
    event_id: str
    endpoint_ids: Annotated[list[str], Meta(description="Endpoints the event is queued for")]


def _uow(state: State) -> service.UowFactory:
    return partial(WebhookUnitOfWork, state.engine)


class WebhookEndpointController(Controller):
    path = "/v1/webhooks/endpoints"
    tags = ["webhooks"]
    dependencies = exchange_only

    @post(
        "/",
        sync_to_thread=True,
        status_code=201,
        summary="Register a webhook endpoint (its secret is in this answer only)",
        description=(
            "The endpoint receives every event of this exchange, and no other exchange's, "
            "each signed with its own secret. Refusals: 400 WEBHOOK_URL_SCHEME, "
            "WEBHOOK_URL_INVALID, WEBHOOK_URL_TOO_LONG; 422 WEBHOOK_URL_SELF, "
            "WEBHOOK_ADDRESS_REFUSED, WEBHOOK_URL_UNRESOLVABLE; 409 WEBHOOK_ENDPOINT_LIMIT, "
            "WEBHOOK_ENDPOINT_EXISTS."
        ),
    )
    def create(
        self, state: State, data: JSONBody[EndpointCreate], principal: NamedDependency[Principal]
    ) -> EndpointWithSecret:
        hooks = service.Webhooks.from_settings(state.settings)
        created = service.register(
            _uow(state), hooks, principal.subject, data.url, data.description
        )
        return EndpointWithSecret.of(created)

    @get("/", sync_to_thread=True, summary="This exchange's webhook endpoints (no secrets)")
    def list_endpoints(self, state: State, principal: NamedDependency[Principal]) -> EndpointList:
        found = service.list_endpoints(_uow(state), principal.subject)
        return EndpointList([EndpointOut.of(e) for e in found])

    @get("/{endpoint_id:str}", sync_to_thread=True, summary="One webhook endpoint (no secret)")
    def get_endpoint(
        self, state: State, endpoint_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> EndpointOut:
        return EndpointOut.of(service.get_endpoint(_uow(state), principal.subject, endpoint_id))

    @post(
        "/{endpoint_id:str}/rotate-secret",
        sync_to_thread=True,
        status_code=200,
        summary="Replace the endpoint's secret (the new one is in this answer only)",
        description=(
            "Takes effect at once: every delivery sent from now on, queued ones included, is "
            "signed with the new secret; the old one signs nothing more."
        ),
    )
    def rotate_secret(
        self, state: State, endpoint_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> EndpointWithSecret:
        rotated = service.rotate_secret(_uow(state), principal.subject, endpoint_id)
        return EndpointWithSecret.of(rotated)

    @delete(
        "/{endpoint_id:str}",
        sync_to_thread=True,
        summary="Remove the endpoint (deliveries still queued for it are dropped)",
    )
    def remove(
        self, state: State, endpoint_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> None:
        service.remove(_uow(state), principal.subject, endpoint_id)

    @post(
        "/{endpoint_id:str}/test",
        sync_to_thread=True,
        status_code=202,
        summary="Send a webhook.test event to this endpoint (queued; retried like any other)",
    )
    def send_test(
        self, state: State, endpoint_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> EventOut:
        return EventOut.of(service.send_test(_uow(state), principal.subject, endpoint_id))


class EventController(Controller):
    path = "/v1/events"
    tags = ["webhooks"]
    dependencies = exchange_only

    @get(
        "/",
        sync_to_thread=True,
        summary="This exchange's events, oldest first (filter by type and creation time)",
    )
    def list_events(
        self,
        state: State,
        principal: NamedDependency[Principal],
        event_type: Annotated[
            str | None, QueryParameter(name="type", description="Exact type, e.g. mint.minted")
        ] = None,
        created_after: Annotated[
            datetime | None,
            QueryParameter(description="Inclusive; ISO 8601, UTC when no offset is given"),
        ] = None,
        created_before: Annotated[
            datetime | None, QueryParameter(description="Exclusive; ISO 8601")
        ] = None,
        cursor: Annotated[int | None, QueryParameter(ge=0)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> EventPage:
        where = EventFilter(event_type, created_after, created_before)
        page, next_cursor = service.list_events(
            _uow(state), principal.subject, where, cursor, limit
        )
        return EventPage([EventOut.of(e) for e in page], next_cursor)

    @get("/{event_id:str}", sync_to_thread=True, summary="One event of this exchange")
    def get_event(
        self, state: State, event_id: FromPath[str], principal: NamedDependency[Principal]
    ) -> EventOut:
        return EventOut.of(service.get_event(_uow(state), principal.subject, event_id))

    @post(
        "/{event_id:str}/redeliver",
        sync_to_thread=True,
        status_code=202,
        summary="Send an event again: same id, same body, signed with the current secret",
    )
    def redeliver(
        self,
        state: State,
        event_id: FromPath[str],
        principal: NamedDependency[Principal],
        endpoint_id: Annotated[
            str | None,
            QueryParameter(name="endpoint_id", description="One of your endpoints; none: all"),
        ] = None,
    ) -> Response[RedeliveryOut]:
        event, targets = service.redeliver(_uow(state), principal.subject, event_id, endpoint_id)
        return Response(RedeliveryOut(event.id, targets), status_code=202)


ROUTES = [WebhookEndpointController, EventController]

__all__ = [
    "ROUTES",
    "EndpointCreate",
    "EndpointOut",
    "EndpointWithSecret",
    "EventOut",
    "EventPage",
    "RedeliveryOut",
]
