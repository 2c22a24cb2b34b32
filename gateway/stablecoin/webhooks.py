"""Webhooks to exchanges: events recorded and queued with the state change, signed when sent.

Every event belongs to one exchange and goes to that exchange's endpoints only
(:mod:`gateway.stablecoin.endpoints`). Each delivery is a ``POST`` of a JSON event
``{"id", "type", "created_at", "data"}`` with

- ``X-DT-Event-Id: <id>``: the same for every retry and redelivery of one event (receivers
  deduplicate by it);
- ``X-DT-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``, where
  ``secret`` is the endpoint's own, as it is at the moment of sending: a rotation applies to
  every delivery from then on, queued or not.

A non-2xx answer, a redirect, or no answer leaves the outbox row due again later, with
exponential backoff; the rows are in the database, so they survive a restart. Before each
attempt the endpoint's host is resolved again and checked against the URL policy, and the
request goes to exactly the addresses checked (TLS still verifies the host name), so a name
re-pointed at an internal address is not followed. Deliveries connect directly:
``HTTP(S)_PROXY`` is not used.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from gateway.errors import GatewayError
from gateway.messaging.outbox import OutboxMessage, OutboxRepository
from gateway.stablecoin.endpoints import (
    IPAddress,
    Target,
    UrlPolicy,
    WebhookUrlUnresolvable,
    event_body,
)
from gateway.stablecoin.endpoints_store import SqlWebhookRepository, WebhookUnitOfWork

log = logging.getLogger(__name__)

TOPIC = "webhook.exchange"
SIGNATURE_HEADER = "X-DT-Signature"
EVENT_ID_HEADER = "X-DT-Event-Id"

Resolver = Callable[[str, int], list[IPAddress]]
"""Host name and port -> the addresses it resolves to."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-DT-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, *, now: float | None = None, tolerance: int = 300
) -> bool:
    """True iff ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` s old."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# ------------------------------------------------------------------ queueing


def queue_delivery(
    outbox: OutboxRepository, event_id: str, endpoint_id: str, url: str, body: bytes, now: datetime
) -> None:
    """Queue one delivery of an event to one endpoint, in the caller's transaction."""
    outbox.add(
        TOPIC,
        body,
        destination=url[:500],
        headers=json.dumps({"event_id": event_id, "endpoint_id": endpoint_id}),
        now=now,
    )


def enqueue(
    outbox: OutboxRepository,
    *,
    exchange: str,
    event_id: str,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> None:
    """Record an event of ``exchange`` and queue its delivery to each of that exchange's
    endpoints, in the caller's transaction (the one ``outbox`` writes in).

    An event of no exchange (a redemption held for a reference no exchange owns) is recorded
    and sent nowhere: it is nobody's to see."""
    body = event_body(event_id, event_type, now, data)
    events = SqlWebhookRepository(outbox.conn)
    events.add_event(event_id, exchange, event_type, now, body)
    if exchange:
        for endpoint_id, url in events.targets(exchange):
            queue_delivery(outbox, event_id, endpoint_id, url, body, now)


# ------------------------------------------------------------------ sending


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to (each once, in the resolver's order)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookUrlUnresolvable(f"{host} does not resolve: {exc}", host=host) from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def checked_target(
    policy: UrlPolicy, url: str, resolver: Resolver = resolve
) -> tuple[Target, list[IPAddress]]:
    """Where ``url`` points and the addresses to connect to; raises when the policy refuses
    it (see :class:`UrlPolicy`)."""
    target = policy.parse(url)
    address = target.address
    addresses = [address] if address is not None else resolver(target.host, target.port)
    return target, policy.check(target, addresses)


class DeliveryFailed(Exception):
    """One attempt failed; the outbox retries it later. The message names the endpoint by id
    (never its URL, which may carry a token, nor anything secret)."""


class WebhookSender:
    """The outbox sender for :data:`TOPIC`: signs with the endpoint's current secret and
    POSTs to the checked addresses; raises on failure (retried with backoff)."""

    def __init__(
        self,
        engine: Engine,
        policy: UrlPolicy,
        timeout: float = 5.0,
        resolver: Resolver = resolve,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.resolver = resolver
        self.timeout = timeout
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, host: str) -> httpx.Client:
        """One connection pool per host name: requests go to addresses, so a shared pool would
        reuse a TLS connection verified for one name for another name at the same address."""
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
                self._clients[host] = client
            return client

    def __call__(self, msg: OutboxMessage) -> None:
        meta = json.loads(msg.headers or "{}")
        event_id = str(meta.get("event_id") or msg.event_id)
        endpoint_id = meta.get("endpoint_id")
        endpoint = None
        if endpoint_id:
            uow = WebhookUnitOfWork(self.engine, readonly=True)
            with uow:
                endpoint = uow.webhooks.endpoint(endpoint_id)
        if endpoint is None:
            # Removed since (or queued for no endpoint before there were endpoints): the
            # exchange lists its events and asks for a redelivery where it wants one.
            log.info(
                "webhook event %s: endpoint %s is gone, delivery dropped", event_id, endpoint_id
            )
            return
        try:
            _, addresses = checked_target(self.policy, endpoint.url, self.resolver)
        except GatewayError as exc:
            raise DeliveryFailed(f"endpoint {endpoint.id}: {exc.code}: {exc.detail}") from None
        url = httpx.URL(endpoint.url)
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: sign(endpoint.secret.encode(), int(time.time()), msg.payload),
        }
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        refused: Exception | None = None
        client = self._client(url.host)
        for address in addresses:
            try:
                response = client.post(
                    url.copy_with(host=str(address)),
                    content=msg.payload,
                    headers=headers,
                    extensions=extensions,
                )
            except httpx.ConnectError as exc:  # the next address may answer
                refused = exc
                continue
            except httpx.HTTPError as exc:
                raise DeliveryFailed(
                    f"endpoint {endpoint.id}: {type(exc).__name__}: {exc}"
                ) from None
            if not 200 <= response.status_code < 300:
                raise DeliveryFailed(f"endpoint {endpoint.id} answered {response.status_code}")
            return
        raise DeliveryFailed(f"endpoint {endpoint.id}: no address answered ({refused})")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TOPIC",
    "DeliveryFailed",
    "Resolver",
    "WebhookSender",
    "checked_target",
    "enqueue",
    "queue_delivery",
    "resolve",
    "sign",
    "verify",
]
