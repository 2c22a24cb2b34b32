"""Participants and networks: who may instruct, where each currency settles, and who may read
what. A network is a registered participant with an endpoint (messages to it are signed and
posted), or a simulated central bank in process."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import ConnectorSettings
from gateway.connector import store
from gateway.connector.messages import iso
from gateway.connector.rows import ParticipantRow
from gateway.connector.schema import participants
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms
from gateway.errors import InvalidInput, NotFound, Unauthorized
from gateway.iso20022 import CURRENCY_EXPONENTS

BIC_RE = re.compile(r"[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def parse_time(value: str, field: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 date-time with an offset, exactly: whole
    milliseconds of the instant, any finer digits dropped (a float timestamp can lose one)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise InvalidInput(f"{field}: not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field}: a date-time with an offset is required")
    return (parsed - _EPOCH) // _MS


def check_bic(value: object, field: str) -> str:
    if not isinstance(value, str) or not BIC_RE.fullmatch(value):
        raise InvalidInput(f"{field}: not a BIC (8 or 11 characters, 7th not 0 or 1)")
    return value


def check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidInput(f"{field}: 1-35 characters [A-Za-z0-9.:-], not starting with . : -")
    return value


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without one."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    return authorization.removeprefix("Bearer ").strip()


@dataclass(frozen=True, slots=True)
class Network:
    bic: str
    currency: str
    endpoint: str | None
    cert_pem: str | None

    @classmethod
    def of(cls, participant: ParticipantRow) -> Network:
        return cls(
            participant.bic, participant.currency, participant.endpoint, participant.cert_pem
        )


class Registry:
    """The participants (in the store, and cached here as networks) and the rules of access."""

    def __init__(self, cfg: ConnectorSettings, engine: Engine, sim: SimulatedNetworks) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sim = sim
        self._networks: dict[str, Network] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        with store.reader(self.engine) as conn:
            rows = store.read_participants(conn, by_registration=True)
        with self._lock:
            self._networks = {r.bic: Network.of(r) for r in rows}

    def upsert(
        self, bic: str, currency: str, endpoint: str | None, cert: str | None, token: str | None
    ) -> None:
        token_hash = hashlib.sha256((token or secrets.token_urlsafe(32)).encode()).hexdigest()
        values = {
            "currency": currency,
            "endpoint": endpoint,
            "cert_pem": cert,
            "token_sha256": token_hash,
            "registered_at": now_ms(),
        }
        with self.engine.begin() as conn:
            key = participants.c.bic == bic
            if conn.execute(sa.select(participants.c.bic).where(key)).first() is None:
                conn.execute(participants.insert().values(bic=bic, **values))
            else:
                if token is None:
                    del values["token_sha256"]
                conn.execute(participants.update().where(key).values(**values))
        self.load()

    def register(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        bic = check_bic(data.get("bic"), "bic")
        currency = data.get("currency")
        if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
            raise InvalidInput("currency: not a settled currency")
        endpoint = data.get("endpoint")
        if endpoint is not None and (
            not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))
        ):
            raise InvalidInput("endpoint: an http(s) URL is required")
        cert = data.get("certificate_pem")
        if endpoint is not None and not cert:
            raise InvalidInput("certificate_pem: required with an endpoint (messages are signed)")
        if cert is not None and (not isinstance(cert, str) or "BEGIN CERTIFICATE" not in cert):
            raise InvalidInput("certificate_pem: a PEM certificate is required")
        token = secrets.token_urlsafe(32)
        self.upsert(bic, str(currency), endpoint, cert, token)
        return {"bic": bic, "currency": currency, "endpoint": endpoint, "token": token}

    def listed(self) -> list[dict[str, Any]]:
        with store.reader(self.engine) as conn:
            rows = store.read_participants(conn)
        return [
            {
                "bic": r.bic,
                "currency": r.currency,
                "endpoint": r.endpoint,
                "has_certificate": bool(r.cert_pem),
                "registered_at": iso(r.registered_at),
            }
            for r in rows
        ]

    def authorize_admin(self, authorization: str | None) -> None:
        """Refuse an administrative request without ``connector.admin_token`` (if one is
        set) as its bearer token."""
        expected = self.cfg.admin_token
        if expected is None:
            return
        token = bearer(authorization)
        if token is None or not hmac.compare_digest(
            token.encode(), expected.get_secret_value().encode()
        ):
            raise Unauthorized("the connector's admin token is required (connector.admin_token)")

    def authorize_pvp_read(self, authorization: str | None, pvp_id: str) -> None:
        """With ``connector.admin_token`` set, a PvP and its messages are shown to the admin
        and to the participants it concerns (a network that settles one of its legs, or a
        party to it): 401 without a known token, and a participant it does not concern is
        told there is no such PvP (its existence is not theirs to learn). Unset, reading is
        open, as the administrative endpoints are."""
        if self.cfg.admin_token is None:
            return
        try:
            self.authorize_admin(authorization)
            return
        except Unauthorized:
            principal = self.authenticate(authorization)
        with store.reader(self.engine) as conn:
            legs = store.read_legs(conn, pvp_id)
        concerned = {bic for g in legs for bic in (g.network_bic, g.debtor_bic, g.creditor_bic)}
        if principal.bic not in concerned:
            raise NotFound(f"no PvP {pvp_id}")

    def authenticate(self, authorization: str | None) -> Network:
        token = bearer(authorization)
        if token is None:
            raise Unauthorized("a participant's bearer token is required")
        digest = hashlib.sha256(token.encode()).hexdigest()
        with store.reader(self.engine) as conn:
            participant = store.participant_by_token(conn, digest)
        if participant is None:
            raise Unauthorized("unknown token")
        return Network.of(participant)

    def network_for(self, currency: str) -> Network | None:
        """The registered endpoint for ``currency`` (latest wins), else the simulated bank."""
        with self._lock:
            found = [n for n in self._networks.values() if n.currency == currency and n.endpoint]
        if found:
            return found[-1]
        bic = self.cfg.simulated_currencies.get(currency)
        return Network(bic, currency, None, None) if bic else None

    def network(self, bic: str) -> Network | None:
        """The network of ``bic``: registered with an endpoint, else simulated, else as
        registered (no endpoint: nothing can be sent to it)."""
        with self._lock:
            net = self._networks.get(bic)
        if net is not None and net.endpoint:
            return net
        if bic in self.sim.by_bic:
            return Network(bic, self.sim.by_bic[bic], None, None)
        return net

    def pinned(self, bic: str) -> str | None:
        """The certificate pinned for a registered sender (None: not registered, or none)."""
        net = self.network(bic)
        return net.cert_pem if net is not None and net.cert_pem else None


__all__ = ["Network", "Registry", "bearer", "check_bic", "check_id", "parse_time"]
