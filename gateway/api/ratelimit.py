"""Per-client-address rate limits for the public routes: a token bucket per address, in this
replica's memory (each replica limits what reaches it)."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

_MAX_ADDRESSES = 100_000
"""Buckets kept at most; past it the full ones (idle clients) are forgotten."""


class AddressLimiter:
    """``rate`` requests a second sustained, ``burst`` at once, per client address."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, address: str, now: float | None = None) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[address] = (tokens, now)
                return (1.0 - tokens) / self.rate
            if len(self._buckets) >= _MAX_ADDRESSES and address not in self._buckets:
                self._forget_idle(now)
            self._buckets[address] = (tokens - 1.0, now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        full = [
            a for a, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for a in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[a]


def check_address(state: Any, host: str | None) -> None:
    """Refuse with 429 and ``Retry-After`` once the address's bucket is empty."""
    limiter: AddressLimiter | None = state.get("public_limiter")
    if limiter is None:
        return
    wait = limiter.take(host or "unknown")
    if wait > 0:
        raise TooManyRequestsException(
            detail="too many requests from this address; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def limit_by_address(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: :func:`check_address` for the connection's client."""
    client = connection.client
    check_address(connection.app.state, client.host if client else None)


__all__ = ["AddressLimiter", "check_address", "limit_by_address"]
