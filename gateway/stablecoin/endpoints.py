"""Webhook endpoints and events: the pure domain.

An **endpoint** belongs to one exchange (the ``subject`` of its API keys) and has its own
secret; it receives every event of that exchange and nothing else. An **event** is one status
change (``mint.minted``, ``redemption.paid``, ...) of one exchange, stored once with its exact
JSON body so that a redelivery sends the same bytes under the same id.

Where an endpoint may point is a :class:`UrlPolicy`: ``http``/``https`` only, no credentials
in the URL, not the gateway itself, and no address in a refused block. Link-local and cloud
metadata addresses (:data:`ALWAYS_REFUSED`) are refused whatever the settings say; loopback
only when allowed (tests and the demo run their receivers there). The policy judges addresses
it is given: resolving a name is I/O, done by the caller, at registration and again before
every delivery (so that a name re-pointed at an internal address is caught then too).

    GatewayError
     ├── InvalidInput
     │    ├── WebhookUrlInvalid       WEBHOOK_URL_INVALID      no host, or credentials in it
     │    ├── WebhookUrlScheme        WEBHOOK_URL_SCHEME       not http or https
     │    └── WebhookUrlTooLong       WEBHOOK_URL_TOO_LONG
     ├── Unprocessable
     │    ├── WebhookUrlSelf          WEBHOOK_URL_SELF         the gateway's own address
     │    ├── WebhookAddressRefused   WEBHOOK_ADDRESS_REFUSED  resolves into a refused block
     │    └── WebhookUrlUnresolvable  WEBHOOK_URL_UNRESOLVABLE the name does not resolve
     ├── Conflict
     │    ├── EndpointLimitReached    WEBHOOK_ENDPOINT_LIMIT
     │    └── EndpointExists          WEBHOOK_ENDPOINT_EXISTS  same URL already registered
     ├── NotFound
     │    ├── EndpointNotFound        WEBHOOK_ENDPOINT_NOT_FOUND
     │    └── EventNotFound           EVENT_NOT_FOUND
     └── Forbidden
          └── ExchangeNotNamed        EXCHANGE_NOT_NAMED       a key with no subject

This module imports only the standard library and other domain modules.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound, Unprocessable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TEST_EVENT = "webhook.test"

ALWAYS_REFUSED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS, GCP, Azure, ... metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
)
"""Refused whatever the settings say: reaching them from the gateway hands out credentials."""

LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


# --------------------------------------------------------------------------- errors


class WebhookUrlInvalid(InvalidInput):
    code = "WEBHOOK_URL_INVALID"
    title = "Not an absolute http(s) URL with a host (and no credentials)"


class WebhookUrlScheme(InvalidInput):
    code = "WEBHOOK_URL_SCHEME"
    title = "Webhook URLs must be http or https"


class WebhookUrlTooLong(InvalidInput):
    code = "WEBHOOK_URL_TOO_LONG"
    title = "The webhook URL is longer than allowed"


class WebhookUrlSelf(Unprocessable):
    code = "WEBHOOK_URL_SELF"
    title = "A webhook endpoint cannot be the gateway itself"


class WebhookAddressRefused(Unprocessable):
    code = "WEBHOOK_ADDRESS_REFUSED"
    title = "The webhook URL points at an address the gateway does not send to"


class WebhookUrlUnresolvable(Unprocessable):
    code = "WEBHOOK_URL_UNRESOLVABLE"
    title = "The webhook URL's host name does not resolve"


class EndpointLimitReached(Conflict):
    code = "WEBHOOK_ENDPOINT_LIMIT"
    title = "This exchange has as many webhook endpoints as allowed"


class EndpointExists(Conflict):
    code = "WEBHOOK_ENDPOINT_EXISTS"
    title = "This exchange already has an endpoint with this URL"


class EndpointNotFound(NotFound):
    code = "WEBHOOK_ENDPOINT_NOT_FOUND"
    title = "Unknown webhook endpoint"


class EventNotFound(NotFound):
    code = "EVENT_NOT_FOUND"
    title = "Unknown event"


class ExchangeNotNamed(Forbidden):
    code = "EXCHANGE_NOT_NAMED"
    title = "This key names no exchange (its subject is empty)"


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points: its scheme, host (a name or an address) and effective port."""

    scheme: str
    host: str
    port: int

    @property
    def address(self) -> IPAddress | None:
        """The host as an IP address, or None for a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def _unwrapped(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address and the IPv4 address it carries, if any (mapped, 6to4): each is judged."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return (address, inner)
    return (address,)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    max_length: int = 2048
    allow_loopback: bool = False
    refused: tuple[IPNetwork, ...] = ()
    self_names: frozenset[tuple[str, int]] = frozenset()
    """(host name or address, port) pairs that reach the gateway itself."""
    self_ports: frozenset[int] = frozenset()
    """Ports the gateway listens on: loopback at one of them is the gateway itself."""

    def parse(self, url: str) -> Target:
        """Check a URL's form (no I/O) and say where it points."""
        if len(url) > self.max_length:
            raise WebhookUrlTooLong(
                f"the URL has {len(url)} characters; at most {self.max_length} are allowed",
                max_length=self.max_length,
            )
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            raise WebhookUrlInvalid("the URL contains spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise WebhookUrlInvalid(f"not a URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise WebhookUrlScheme(f"scheme {scheme or '(none)'!r} is not http or https")
        if not parts.hostname:
            raise WebhookUrlInvalid("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise WebhookUrlInvalid("credentials in the URL are refused: it is listed back")
        if parts.fragment:
            raise WebhookUrlInvalid("a fragment (#...) is never sent: leave it out")
        host = parts.hostname.rstrip(".").lower()
        target = Target(scheme, host, port or (443 if scheme == "https" else 80))
        if (target.host, target.port) in self.self_names:
            raise WebhookUrlSelf("the URL is the gateway's own address")
        if target.address is not None:
            self.check(target, [target.address])
        return target

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None."""
        for candidate in _unwrapped(address):
            if candidate.is_unspecified:
                return "unspecified address (it reaches this host)"
            if any(candidate in net for net in ALWAYS_REFUSED):
                return "link-local or cloud metadata address"
            if candidate.is_loopback and not self.allow_loopback:
                return "loopback address (allowed only by webhooks.allow_loopback)"
            if any(candidate.version == net.version and candidate in net for net in self.refused):
                return "address in webhooks.refused_networks"
        return None

    def check(self, target: Target, addresses: Iterable[IPAddress]) -> list[IPAddress]:
        """Refuse ``target`` if any address it resolves to is refused or is the gateway
        itself; returns the addresses (to connect to exactly these)."""
        found = list(addresses)
        for address in found:
            why = self.refusal(address)
            if why is not None:
                where = f"{address}" if target.address else f"{target.host} resolves to {address}"
                raise WebhookAddressRefused(f"{where}: {why}", address=str(address))
            if (str(address), target.port) in self.self_names or (
                target.port in self.self_ports
                and any(a.is_loopback or a.is_unspecified for a in _unwrapped(address))
            ):
                raise WebhookUrlSelf("the URL reaches the gateway itself")
        return found


# --------------------------------------------------------------------------- objects


def new_secret() -> str:
    """A signing secret: 32 random bytes, URL-safe text. Shown once, at creation or rotation."""
    return "whsec_" + secrets.token_urlsafe(32)


def new_endpoint_id() -> str:
    return "we_" + secrets.token_hex(8)


def new_event_id() -> str:
    """An id for an event that no state change names (a test event): 40 hex, as the others."""
    return secrets.token_hex(20)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    exchange: str
    url: str
    description: str
    slot: int
    """1 to the per-exchange maximum, unique per exchange: the limit is a constraint."""
    created_at: datetime
    secret_rotated_at: datetime | None = None
    secret: str = field(default="", repr=False)

    def rotated(self, secret: str, at: datetime) -> Endpoint:
        return Endpoint(
            self.id,
            self.exchange,
            self.url,
            self.description,
            self.slot,
            self.created_at,
            at,
            secret,
        )


def free_slot(taken: Iterable[int], maximum: int) -> int:
    """The lowest slot in 1..maximum not taken, or :class:`EndpointLimitReached`."""
    used = set(taken)
    for slot in range(1, maximum + 1):
        if slot not in used:
            return slot
    raise EndpointLimitReached(
        f"at most {maximum} webhook endpoints per exchange: remove one first", limit=maximum
    )


def event_body(
    event_id: str, event_type: str, created_at: datetime, data: Mapping[str, Any]
) -> bytes:
    """The JSON body of an event, as sent and stored: compact, keys sorted."""
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created_at": created_at.isoformat(),
            "data": dict(data),
        },
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    ).encode()


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    id: str
    exchange: str
    type: str
    created_at: datetime
    body: bytes = field(repr=False)

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)["data"]
        return data


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which of an exchange's events to list: by type, by creation time, after a cursor."""

    type: str | None = None
    created_after: datetime | None = None
    """Inclusive. A naive date-time is taken as UTC."""
    created_before: datetime | None = None
    """Exclusive."""

    def __post_init__(self) -> None:
        for name in ("created_after", "created_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        if self.type is not None and not 1 <= len(self.type) <= 64:
            raise InvalidInput("type must be 1 to 64 characters")


__all__ = [
    "ALWAYS_REFUSED",
    "LOOPBACK",
    "TEST_EVENT",
    "Endpoint",
    "EndpointExists",
    "EndpointLimitReached",
    "EndpointNotFound",
    "Event",
    "EventFilter",
    "EventNotFound",
    "ExchangeNotNamed",
    "IPAddress",
    "Target",
    "UrlPolicy",
    "WebhookAddressRefused",
    "WebhookUrlInvalid",
    "WebhookUrlScheme",
    "WebhookUrlSelf",
    "WebhookUrlTooLong",
    "WebhookUrlUnresolvable",
    "event_body",
    "free_slot",
    "new_endpoint_id",
    "new_event_id",
    "new_secret",
]
