"""The operational sections of the settings: rate limits, readiness, metrics, API keys.

Part of :class:`gateway.config.Settings` (``ratelimit``, ``readiness``, ``metrics``, ``keys``),
kept apart from the business sections. docs/operations.md says when to change each.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    for net in value:
        ipaddress.ip_network(net, strict=False)
    return value


class RateLimitSettings(_Section):
    """Token buckets in each replica's memory: every replica limits what reaches it.

    - a request with an API key takes a token from its key's bucket and from its client
      address's bucket; a request without one, from its address's bucket only;
    - the public proof-of-collateral routes keep their own per-address bucket
      (``collateral.rate_per_second`` and ``rate_burst``);
    - ``/health`` and ``/ready`` are never limited (probes must not be refused);
    - the ISO 20022 door (``POST /iso20022/messages``) charges a sender's address only for a
      post it refuses: a message signed with the pinned connector's key costs nothing, so the
      connector is never limited there, and one flooding the door with junk is.

    A refused request is answered ``429`` with ``Retry-After`` (whole seconds)."""

    enabled: bool = True
    key_rate_per_second: float = Field(default=500.0, gt=0)
    """Requests a second one API key may send, sustained (summed over its addresses)."""
    key_burst: int = Field(default=1000, ge=1)
    """Requests one API key may send at once above the sustained rate."""
    address_rate_per_second: float = Field(default=1000.0, gt=0)
    """Requests a second from one client address, keyed or not, sustained."""
    address_burst: int = Field(default=2000, ge=1)
    exempt_networks: tuple[str, ...] = ()
    """Client addresses never limited (CIDR blocks), e.g. an operator's batch host. Behind a
    reverse proxy the client address is the proxy's unless uvicorn trusts its
    ``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``): see docs/operations.md."""
    door_refusals_per_second: float = Field(default=1.0, gt=0)
    """ISO 20022 door: refused posts a second one address may make, sustained."""
    door_refusal_burst: int = Field(default=20, ge=1)

    _check_networks = field_validator("exempt_networks")(_networks)


class ReadinessSettings(_Section):
    """What ``GET /ready`` requires (``/health`` only says the process answers)."""

    checkpoint_max_age_seconds: float = Field(default=60.0, gt=0)
    """The newest collateral checkpoint must have been signed less than this long ago.
    Keep it above ``collateral.resign_seconds``: a quiet log is re-signed that often."""
    probe_timeout_seconds: float = Field(default=2.0, gt=0)
    """How long the chain or the connector may take to answer a probe."""
    cache_seconds: float = Field(default=1.0, ge=0)
    """A replica answers ``/ready`` from its last verdict this long: load balancers probing
    every replica often then cost the chain node and the connector one probe a second."""
    connector_path: str = "/health"
    """Probed on ``connector.url`` when PvP runs (a connector certificate is pinned); any
    answer below 500 counts as reachable."""


class MetricsSettings(_Section):
    """Prometheus metrics on a port of their own (docs/operations.md, "Metrics")."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """None: no metrics server. It has no authentication: bind it where only the monitoring
    system reaches it."""
    host: str = "127.0.0.1"
    database_refresh_seconds: float = Field(default=5.0, ge=0)
    """The gauges read from the database (backlogs, states, the collateral log) are read at
    most this often, however often the server is scraped."""


class KeySettings(_Section):
    """API keys (``dt-gateway keys``)."""

    cache_seconds: float = Field(default=0.5, gt=0, le=1.0)
    """A replica trusts a key it verified for this long: a revoked or expired key stops
    working on every replica within this time (at most a second)."""
    last_used_every_seconds: float = Field(default=60.0, ge=1.0)
    """A key's ``last_used_at`` is written at most this often per key and replica (not once
    per request)."""


def secret_values(model: BaseModel) -> Iterator[str]:
    """Every secret a settings object holds (its ``SecretStr`` values, in any section), for
    the log redactor (:mod:`gateway.logcontext`)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from secret_values(value)
        elif isinstance(value, tuple | list):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from secret_values(item)


__all__ = [
    "KeySettings",
    "MetricsSettings",
    "RateLimitSettings",
    "ReadinessSettings",
    "secret_values",
]
