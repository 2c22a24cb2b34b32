"""Webhooks to the exchange: queued in the outbox with the state change, signed when sent.

Each delivery is a ``POST`` of a JSON event ``{"id", "type", "created_at", "data"}`` with

- ``X-DT-Event-Id: <id>``: the same for every retry of one event (receivers deduplicate by it);
- ``X-DT-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.

A non-2xx answer or no answer leaves the outbox row due again later, with exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from gateway.config import StablecoinSettings
from gateway.outbox import OutboxMessage, OutboxRepository

TOPIC = "webhook.exchange"
SIGNATURE_HEADER = "X-DT-Signature"
EVENT_ID_HEADER = "X-DT-Event-Id"


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


def enqueue(
    outbox: OutboxRepository,
    settings: StablecoinSettings,
    *,
    event_id: str,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> None:
    """Queue one event in the caller's transaction (nothing when no webhook URL is set)."""
    if not settings.webhook_url:
        return
    body = json.dumps(
        {"id": event_id, "type": event_type, "created_at": now.isoformat(), "data": dict(data)},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    ).encode()
    outbox.add(TOPIC, body, destination=settings.webhook_url, event_id=event_id, now=now)


class WebhookSender:
    """The outbox sender for :data:`TOPIC`: signs and POSTs; raises on failure (retried)."""

    def __init__(self, secret: bytes, timeout: float = 5.0) -> None:
        self.secret = secret
        self.client = httpx.Client(timeout=timeout)

    def __call__(self, msg: OutboxMessage) -> None:
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: msg.event_id,
            SIGNATURE_HEADER: sign(self.secret, int(time.time()), msg.payload),
        }
        response = self.client.post(msg.destination, content=msg.payload, headers=headers)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"webhook receiver answered {response.status_code}")

    @classmethod
    def from_settings(cls, settings: StablecoinSettings) -> WebhookSender:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        return cls(secret.encode(), settings.webhook_timeout_seconds)


__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TOPIC",
    "WebhookSender",
    "enqueue",
    "sign",
    "verify",
]
