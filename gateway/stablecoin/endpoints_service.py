"""Webhook endpoint and event use cases: register, list, rotate, remove; list events, send one
again, send a test event; adopt earlier versions' single ``webhook_url`` at start-up.

Every use case acts for one exchange (the ``subject`` of the caller's key) and sees only that
exchange's endpoints and events: another exchange's look unknown (404). An endpoint's secret
leaves the gateway twice only: in the answer that creates it and in the answer that rotates it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import sqlalchemy as sa

from gateway.config import Settings
from gateway.db import retrying, utcnow
from gateway.errors import InvalidInput
from gateway.messaging.outbox import outbox_t
from gateway.stablecoin.endpoints import (
    TEST_EVENT,
    Endpoint,
    EndpointExists,
    EndpointNotFound,
    Event,
    EventFilter,
    EventNotFound,
    ExchangeNotNamed,
    UrlPolicy,
    event_body,
    free_slot,
    new_endpoint_id,
    new_event_id,
    new_secret,
)
from gateway.stablecoin.endpoints_store import WebhookUnitOfWork
from gateway.stablecoin.webhooks import TOPIC, Resolver, checked_target, queue_delivery, resolve

log = logging.getLogger(__name__)

UowFactory = Callable[..., WebhookUnitOfWork]
"""``uow()`` for a write transaction, ``uow(readonly=True)`` for reads."""

MAX_DESCRIPTION = 200


class WebhookUrlUnassigned(InvalidInput):
    code = "WEBHOOK_URL_UNASSIGNED"
    title = "stablecoin.webhook_url is set but names no exchange (stablecoin.webhook_exchange)"


def _port(scheme: str, port: int | None) -> int:
    return port or (443 if scheme == "https" else 80)


def policy_of(settings: Settings) -> UrlPolicy:
    """The URL policy of ``settings.webhooks``; the gateway's own addresses are
    ``http.public_url`` and ``http.host``:``http.port``."""
    names: set[tuple[str, int]] = set()
    ports = {settings.http.port}
    public = urlsplit(settings.http.public_url)
    if public.hostname:
        port = _port(public.scheme, public.port)
        names.add((public.hostname.rstrip(".").lower(), port))
        ports.add(port)
    if settings.http.host not in ("", "0.0.0.0", "::"):  # noqa: S104 (compared, not bound)
        names.add((settings.http.host.lower(), settings.http.port))
    w = settings.webhooks
    return UrlPolicy(
        max_length=w.max_url_length,
        allow_loopback=w.allow_loopback,
        refused=tuple(ipaddress.ip_network(n, strict=False) for n in w.refused_networks),
        self_names=frozenset(names),
        self_ports=frozenset(ports),
    )


@dataclass(frozen=True, slots=True)
class Webhooks:
    """What the use cases need from the settings, and the resolver (I/O) they check with."""

    policy: UrlPolicy
    max_endpoints: int
    resolver: Resolver = resolve

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = resolve) -> Webhooks:
        return cls(policy_of(settings), settings.webhooks.max_endpoints_per_exchange, resolver)


def _named(exchange: str) -> str:
    if not exchange:
        raise ExchangeNotNamed("the key has no subject: create exchange keys with --subject")
    return exchange


def _own(endpoint: Endpoint | None, exchange: str, endpoint_id: str) -> Endpoint:
    if endpoint is None or endpoint.exchange != exchange:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


# ------------------------------------------------------------------ endpoints


def register(
    uow: UowFactory,
    hooks: Webhooks,
    exchange: str,
    url: str,
    description: str = "",
    *,
    secret: str | None = None,
    now: datetime | None = None,
) -> Endpoint:
    """Add an endpoint of ``exchange`` at ``url`` (checked against the policy first, with its
    host resolved); returns it with its secret (new unless given: see :func:`adopt_legacy_url`)."""
    _named(exchange)
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description: at most {MAX_DESCRIPTION} characters")
    checked_target(hooks.policy, url, hooks.resolver)
    endpoint_id, secret = new_endpoint_id(), secret or new_secret()
    write = uow()

    def work() -> Endpoint:
        existing = write.webhooks.endpoint_by_url(exchange, url)
        if existing is not None:
            raise EndpointExists(
                f"endpoint {existing.id} already has this URL", endpoint_id=existing.id
            )
        slot = free_slot((e.slot for e in write.webhooks.endpoints(exchange)), hooks.max_endpoints)
        at = now or utcnow()
        endpoint = Endpoint(endpoint_id, exchange, url, description, slot, at, None, secret)
        write.webhooks.add_endpoint(endpoint)
        return endpoint

    created = retrying(write, work)
    log.info("webhook endpoint %s registered for exchange %s", created.id, exchange)
    return created


def list_endpoints(uow: UowFactory, exchange: str) -> list[Endpoint]:
    read = uow(readonly=True)
    with read:
        return read.webhooks.endpoints(_named(exchange))


def get_endpoint(uow: UowFactory, exchange: str, endpoint_id: str) -> Endpoint:
    read = uow(readonly=True)
    with read:
        return _own(read.webhooks.endpoint(endpoint_id), _named(exchange), endpoint_id)


def rotate_secret(
    uow: UowFactory, exchange: str, endpoint_id: str, now: datetime | None = None
) -> Endpoint:
    """Give the endpoint a new secret. It signs every delivery sent from the commit on (queued
    ones too); the old one signs nothing more."""
    _named(exchange)
    secret = new_secret()
    write = uow()

    def work() -> Endpoint:
        current = _own(write.webhooks.endpoint(endpoint_id), exchange, endpoint_id)
        rotated = current.rotated(secret, now or utcnow())
        write.webhooks.update_secret(rotated)
        return rotated

    rotated = retrying(write, work)
    log.info("webhook endpoint %s: secret rotated", endpoint_id)
    return rotated


def remove(uow: UowFactory, exchange: str, endpoint_id: str) -> None:
    """Remove the endpoint; deliveries still queued for it are dropped when their turn comes."""
    _named(exchange)
    write = uow()

    def work() -> None:
        _own(write.webhooks.endpoint(endpoint_id), exchange, endpoint_id)
        write.webhooks.remove_endpoint(endpoint_id)

    retrying(write, work)
    log.info("webhook endpoint %s removed", endpoint_id)


# ------------------------------------------------------------------ events


def list_events(
    uow: UowFactory, exchange: str, where: EventFilter, cursor: int | None, limit: int
) -> tuple[list[Event], int | None]:
    """The exchange's events, oldest first; the cursor for the next page, if there is one."""
    read = uow(readonly=True)
    with read:
        rows = read.webhooks.events(_named(exchange), where, cursor or 0, limit + 1)
    page = rows[:limit]
    return page, (page[-1].seq if len(rows) > limit else None)


def _own_event(uow: WebhookUnitOfWork, exchange: str, event_id: str) -> Event:
    event = uow.webhooks.event(event_id)
    if event is None or event.exchange != exchange:
        raise EventNotFound(f"no event {event_id}")
    return event


def get_event(uow: UowFactory, exchange: str, event_id: str) -> Event:
    read = uow(readonly=True)
    with read:
        return _own_event(read, _named(exchange), event_id)


def redeliver(
    uow: UowFactory,
    exchange: str,
    event_id: str,
    endpoint_id: str | None = None,
    now: datetime | None = None,
) -> tuple[Event, list[str]]:
    """Queue the event again, same id and body, to one of the exchange's endpoints or to all
    of them; returns the event and the endpoints it is queued for."""
    _named(exchange)
    write = uow()

    def work() -> tuple[Event, list[str]]:
        at = now or utcnow()
        event = _own_event(write, exchange, event_id)
        if endpoint_id is not None:
            one = _own(write.webhooks.endpoint(endpoint_id), exchange, endpoint_id)
            targets = [(one.id, one.url)]
        else:
            targets = write.webhooks.targets(exchange)
        for target_id, url in targets:
            queue_delivery(write.outbox, event.id, target_id, url, event.body, at)
        return event, [t for t, _ in targets]

    return retrying(write, work)


def send_test(
    uow: UowFactory, exchange: str, endpoint_id: str, now: datetime | None = None
) -> Event:
    """Record a ``webhook.test`` event of the exchange and queue it to this endpoint only."""
    _named(exchange)
    event_id = new_event_id()
    write = uow()

    def work() -> Event:
        at = now or utcnow()
        endpoint = _own(write.webhooks.endpoint(endpoint_id), exchange, endpoint_id)
        data = {"endpoint_id": endpoint.id, "message": "a test event: verify its signature"}
        body = event_body(event_id, TEST_EVENT, at, data)
        write.webhooks.add_event(event_id, exchange, TEST_EVENT, at, body)
        queue_delivery(write.outbox, event_id, endpoint.id, endpoint.url, body, at)
        return Event(0, event_id, exchange, TEST_EVENT, at, body)

    return retrying(write, work)


# ------------------------------------------------------------------ start-up


def adopt_legacy_url(
    uow: UowFactory, settings: Settings, resolver: Resolver = resolve
) -> Endpoint | None:
    """Make earlier versions' single ``stablecoin.webhook_url`` an endpoint of the exchange
    ``stablecoin.webhook_exchange`` names, with ``webhook_secret`` as its secret (its
    receiver verifies as before); deliveries queued for the URL before the upgrade are
    handed to that endpoint. Idempotent: an endpoint already there is left as it is (a
    secret rotated since stays rotated). None when no URL is set.

    Without ``webhook_exchange`` it refuses (:class:`WebhookUrlUnassigned`): sending every
    exchange's events to one URL is exactly what endpoints per exchange put an end to."""
    sc = settings.stablecoin
    if not sc.webhook_url:
        return None
    if not sc.webhook_exchange:
        raise WebhookUrlUnassigned(
            "set stablecoin.webhook_exchange to the exchange (API key subject) whose receiver "
            "stablecoin.webhook_url is, or remove the URL; see docs/stablecoin.md, Webhooks"
        )
    exchange, url = sc.webhook_exchange, sc.webhook_url
    read = uow(readonly=True)
    with read:
        endpoint = read.webhooks.endpoint_by_url(exchange, url)
    if endpoint is None:
        secret = sc.webhook_secret.get_secret_value() if sc.webhook_secret else None
        try:
            endpoint = register(
                uow,
                Webhooks.from_settings(settings, resolver),
                exchange,
                url,
                "adopted from stablecoin.webhook_url",
                secret=secret,
            )
        except EndpointExists:  # another replica adopted it at the same moment
            with read:
                endpoint = read.webhooks.endpoint_by_url(exchange, url)
            assert endpoint is not None
    _hand_over_legacy_deliveries(uow, endpoint)
    log.warning(
        "stablecoin.webhook_url is endpoint %s of exchange %s now: manage it through "
        "/v1/webhooks/endpoints and remove the setting",
        endpoint.id,
        exchange,
    )
    return endpoint


def _hand_over_legacy_deliveries(uow: UowFactory, endpoint: Endpoint) -> int:
    """Deliveries queued by an earlier version name no endpoint: give them this one."""
    write = uow()

    def work() -> int:
        rows = write.outbox.conn.execute(
            sa.select(outbox_t.c.id, outbox_t.c.event_id).where(
                outbox_t.c.topic == TOPIC,
                outbox_t.c.sent_at.is_(None),
                outbox_t.c.headers == "{}",
            )
        ).all()
        for row in rows:
            headers = json.dumps({"event_id": row.event_id, "endpoint_id": endpoint.id})
            write.outbox.conn.execute(
                outbox_t.update().where(outbox_t.c.id == row.id).values(headers=headers)
            )
        return len(rows)

    moved = retrying(write, work)
    if moved:
        log.info("%d queued webhook deliveries handed to endpoint %s", moved, endpoint.id)
    return moved


__all__ = [
    "UowFactory",
    "WebhookUrlUnassigned",
    "Webhooks",
    "adopt_legacy_url",
    "get_endpoint",
    "get_event",
    "list_endpoints",
    "list_events",
    "policy_of",
    "redeliver",
    "register",
    "remove",
    "rotate_secret",
    "send_test",
]
