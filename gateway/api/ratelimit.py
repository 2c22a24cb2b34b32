"""Rate limits: token buckets per API key and per client address, in this replica's memory
(each replica limits what reaches it). What is limited how is set by
:class:`gateway.config_ops.RateLimitSettings`:

- a route that needs a key: its client address's bucket (before the key is checked, so
  guessing keys is limited too), then its key's;
- another route: its client address's bucket;
- the public proof-of-collateral routes: their own per-address bucket (``collateral.rate_*``);
- ``/health`` and ``/ready``: none (probes are never refused);
- ``POST /iso20022/messages``: its address's door bucket, and only when the post is refused; a
  message the pinned connector signed costs nothing, so the connector is never limited.

An empty bucket is answered ``429`` with ``Retry-After`` (whole seconds). Addresses in
``ratelimit.exempt_networks`` are never limited; ``ratelimit.enabled = false`` turns all of it
off. Taking a token is a dictionary lookup and a little arithmetic under a lock: a keyed
request pays about a microsecond, and a PvP message at the door only a lookup.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import replace
from functools import cache
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    PathItem,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute
from litestar.types import HTTPScope

from gateway.api.deps import principal_of
from gateway.config_ops import RateLimitSettings

_MAX_KEYS = 100_000
"""Buckets kept at most; past it the full ones (idle clients) are forgotten."""

UNLIMITED = "unlimited"
"""``opt={"rate_limit": UNLIMITED}`` on a handler: never limited (the probes)."""


class TokenBuckets:
    """``rate`` requests a second sustained, ``burst`` at once, per key (an address, an API
    key id)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            if len(self._buckets) >= _MAX_KEYS and key not in self._buckets:
                self._forget_idle(now)
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0

    def wait(self, key: str, now: float | None = None) -> float:
        """The seconds until ``key`` has a token (0.0: it has one now), taking none."""
        held = self._buckets.get(key)
        if held is None:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = min(self.burst, held[0] + (now - held[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full = [
            a for a, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for a in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[a]


AddressLimiter = TokenBuckets
"""The public routes' per-address buckets (``collateral.rate_*``)."""


class RateLimits:
    """The buckets of one app, from ``ratelimit`` settings."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.enabled = settings.enabled
        self.keys = TokenBuckets(settings.key_rate_per_second, settings.key_burst)
        self.addresses = TokenBuckets(settings.address_rate_per_second, settings.address_burst)
        self.door = TokenBuckets(settings.door_refusals_per_second, settings.door_refusal_burst)
        self._exempt = [ipaddress.ip_network(n, strict=False) for n in settings.exempt_networks]
        self._exempt_seen: dict[str, bool] = {}

    def exempt(self, host: str) -> bool:
        if not self._exempt:
            return False
        known = self._exempt_seen.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host)
                known = any(ip in net for net in self._exempt)
            except ValueError:
                known = False
            if len(self._exempt_seen) > _MAX_KEYS:
                self._exempt_seen.clear()
            self._exempt_seen[host] = known
        return known

    def applies_to(self, host: str) -> bool:
        return self.enabled and not self.exempt(host)


def refuse(wait: float, what: str) -> None:
    """Raise the 429 for a bucket that is empty for another ``wait`` seconds."""
    if wait > 0:
        raise TooManyRequestsException(
            detail=f"too many requests from this {what}; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def _limits(state: Any) -> RateLimits | None:
    limits: RateLimits | None = state.get("rate_limits")
    return limits


def _host(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    client = connection.client
    return client.host if client and client.host else "unknown"


def scope_host(scope: HTTPScope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# ------------------------------------------------------------------ public routes


def check_address(state: Any, host: str | None) -> None:
    """The public routes' own per-address bucket (``collateral.rate_*``): 429 once empty."""
    limiter: TokenBuckets | None = state.get("public_limiter")
    limits = _limits(state)
    host = host or "unknown"
    if limiter is None or (limits is not None and not limits.applies_to(host)):
        return
    refuse(limiter.take(host), "address")


def limit_by_address(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the public proof-of-collateral routes: :func:`check_address`."""
    check_address(connection.app.state, _host(connection))


# ------------------------------------------------------------------ every other route


@cache
def _policy(handler: HTTPRouteHandler) -> str:
    """``unlimited``, ``own`` (the route has the public routes' bucket) or ``address``."""
    if handler.opt.get("rate_limit") == UNLIMITED:
        return UNLIMITED
    if limit_by_address in handler.resolve_guards():
        return "own"
    return "address"


def limited(handler: HTTPRouteHandler) -> bool:
    """Whether a route can answer 429 (for its OpenAPI document)."""
    return _policy(handler) != UNLIMITED


def limit_address_first(connection: ASGIConnection[Any, Any, Any, Any], handler: Any) -> None:
    """App guard, first of all: the client address's bucket, before a key is looked at."""
    if not isinstance(handler, HTTPRouteHandler) or _policy(handler) != "address":
        return
    limits = _limits(connection.app.state)
    host = _host(connection)
    if limits is not None and limits.applies_to(host):
        refuse(limits.addresses.take(host), "address")


def limit_key(connection: ASGIConnection[Any, Any, Any, Any], handler: Any) -> None:
    """App guard, after the key was checked: the key's bucket."""
    principal = principal_of(connection)
    if principal is None or not isinstance(handler, HTTPRouteHandler):
        return
    limits = _limits(connection.app.state)
    if limits is not None and limits.applies_to(_host(connection)):
        refuse(limits.keys.take(principal.key_id), "API key")


# ------------------------------------------------------------------ the ISO 20022 door


def door_check(state: Any, host: str) -> None:
    """Before a post to the door is read: 429 while its address has no refusals left."""
    limits = _limits(state)
    if limits is not None and limits.applies_to(host):
        refuse(limits.door.wait(host), "address (too many refused messages)")


def door_refused(state: Any, host: str) -> None:
    """A post from ``host`` was refused: it costs the address a token."""
    limits = _limits(state)
    if limits is not None and limits.applies_to(host):
        limits.door.take(host)


# ------------------------------------------------------------------ OpenAPI

_RATE_LIMITED = {
    "type": "https://dt-gateway.example/problems/rate_limited",
    "title": "Too Many Requests",
    "status": 429,
    "detail": "too many requests from this address; retry later",
    "code": "RATE_LIMITED",
}


def too_many() -> OpenAPIResponse:
    """The 429 answer as documented: a problem document with ``Retry-After``."""
    return OpenAPIResponse(
        description=(
            "Too many requests: retry after the seconds Retry-After says. Codes:\n\n"
            "- `RATE_LIMITED`: Too Many Requests"
        ),
        content={
            "application/problem+json": OpenAPIMediaType(
                schema=Reference(ref="#/components/schemas/Problem"),
                examples={
                    "RATE_LIMITED": Example(summary="Too Many Requests", value=_RATE_LIMITED)
                },
            )
        },
        headers={
            "Retry-After": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
                description="Seconds to wait before retrying",
                required=True,
            )
        },
    )


def document(app: Litestar, door_path: str) -> None:
    """Declare the 429 of every operation of ``app`` that can answer it (after the app's other
    refusals are declared), the ISO 20022 door's included."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        item = paths[route.path_format]
        for method, (handler, _) in route.route_handler_map.items():
            operation = getattr(item, method.lower(), None)
            if isinstance(operation, Operation) and limited(handler):
                _declare_429(operation)
    door = paths.get(door_path)
    if isinstance(door, PathItem) and isinstance(door.post, Operation):
        # A copy: the door's document is shared with the connector mock, which has no limits.
        post = replace(door.post, responses=dict(door.post.responses or {}))
        _declare_429(post)
        paths[door_path] = replace(door, post=post)


def _declare_429(operation: Operation) -> None:
    responses = dict(operation.responses or {})
    declared = responses.get("429")
    if not isinstance(declared, OpenAPIResponse) or not declared.headers:
        responses["429"] = too_many()
    operation.responses = responses


__all__ = [
    "UNLIMITED",
    "AddressLimiter",
    "RateLimits",
    "TokenBuckets",
    "check_address",
    "document",
    "door_check",
    "door_refused",
    "limit_address_first",
    "limit_by_address",
    "limit_key",
    "limited",
    "scope_host",
    "too_many",
]
