"""The orchestrator: participant registry, matching, PvP decisions, delivery and recovery.

One durable decision per PvP (``decisions`` row, final by the store's triggers), taken in the
same transaction as the outbox rows that deliver it. Threads:

- the *sender* delivers outbox rows as soon as they are committed (woken by an Event),
  to the simulated networks in process or to registered endpoints over HTTP (signed), with
  exponential backoff until the receiver's technical acknowledgement; faults apply here;
- the *sweeper* aborts PvPs whose deadline - margin passed without both locks, re-sends
  decisions not acknowledged (ACSC / camt.029) in time, and retries unprocessed inbound
  messages.

After a crash, :meth:`Connector.start` resumes from the database alone: unsent outbox rows
are sent, undecided PvPs past their deadline are aborted, decided ones are re-delivered.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.config import Settings
from gateway.connector import store
from gateway.connector.faults import Faults
from gateway.connector.keys import load_or_create_identity
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import (
    decisions,
    inbox,
    instructions,
    legs,
    now_ms,
    outbox,
    participants,
    pvp_messages,
    pvps,
)
from gateway.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from gateway.faults import crash_point
from gateway.iso20022 import (
    CURRENCY_EXPONENTS,
    MAX_MINOR_UNITS,
    Admi002,
    Camt029,
    Camt056,
    CancellationRequest,
    CreditTransfer,
    Message,
    MessageRejected,
    Money,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    ParsedMessage,
    PvPTerms,
    SignatureInvalid,
    TransactionStatus,
    admi002_for,
    build,
    header_for,
    parse,
    sign_envelope,
    verify_envelope,
)

log = logging.getLogger(__name__)

PACS009 = "pacs.009.001.08"
BIC_RE = re.compile(r"[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}")


def new_id(prefix: str = "C") -> str:
    return prefix + uuid.uuid4().hex[:30]


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def iso(ms: int | None) -> str | None:
    return None if ms is None else ms_to_dt(ms).isoformat().replace("+00:00", "Z")


def parse_time(value: str, field: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise InvalidInput(f"{field}: not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field}: a date-time with an offset is required")
    return int(parsed.timestamp() * 1000)


def check_bic(value: Any, field: str) -> str:
    if not isinstance(value, str) or not BIC_RE.fullmatch(value):
        raise InvalidInput(f"{field}: not a BIC (8 or 11 characters, 7th not 0 or 1)")
    return value


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidInput(f"{field}: 1-35 characters [A-Za-z0-9.:-], not starting with . : -")
    return value


@dataclass(frozen=True, slots=True)
class Side:
    """One party of a trade: sells ``amount`` of ``currency`` from ``account`` and receives
    the other side's currency into ``receive_account``."""

    bic: str
    currency: str
    amount: int
    account: str
    receive_account: str
    reference: str


@dataclass(frozen=True, slots=True)
class Network:
    bic: str
    currency: str
    endpoint: str | None
    cert_pem: str | None


@dataclass(frozen=True, slots=True)
class _PvPRef:
    id: str
    deadline: int
    condition: str


@dataclass(frozen=True, slots=True)
class _PvPSecret:
    id: str
    deadline: int
    condition: str
    secret: str


@dataclass(slots=True)
class _Lane:
    """Delivery to one network: a queue of outbox rows, its threads, its HTTP client."""

    dest: str
    queue: queue.SimpleQueue[Any]
    http: httpx.Client
    threads: list[threading.Thread] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Inbound:
    status: int
    body: Any
    xml: bool = False


def _side(data: Any, name: str) -> Side:
    if not isinstance(data, dict):
        raise InvalidInput(f"{name}: an object is required")
    currency = data.get("currency")
    amount = data.get("amount")
    if currency not in CURRENCY_EXPONENTS:
        raise InvalidInput(f"{name}.currency: not a settled currency")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_MINOR_UNITS:
        raise InvalidInput(f"{name}.amount: a positive integer of minor units is required")
    accounts = []
    for key in ("account", "receive_account"):
        acc = data.get(key)
        if not isinstance(acc, str) or not 1 <= len(acc) <= 34:
            raise InvalidInput(f"{name}.{key}: 1-34 characters required")
        accounts.append(acc)
    ref = data.get("reference") or new_id("T")
    return Side(
        bic=check_bic(data.get("bic"), f"{name}.bic"),
        currency=str(currency),
        amount=amount,
        account=accounts[0],
        receive_account=accounts[1],
        reference=check_id(ref, f"{name}.reference"),
    )


class Connector:
    """The SWIFT CBDC-connector mock. ``start()`` before use, ``stop()`` after."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.cfg = settings.connector
        self.bic = self.cfg.bic
        self.engine = engine or store.make_engine(self.cfg.database_url)
        self.faults = Faults()
        if self.cfg.signing_key_pem is not None and self.cfg.signing_cert_pem:
            self.key_pem = self.cfg.signing_key_pem.get_secret_value()
            self.cert_pem = self.cfg.signing_cert_pem
        else:
            self.key_pem, self.cert_pem = load_or_create_identity(
                settings.data_dir / "connector", f"connector {self.bic}"
            )
        self.sim = SimulatedNetworks(
            self.engine,
            dict(self.cfg.simulated_currencies),
            connector_bic=self.bic,
            faults=self.faults,
        )
        self.margin = self.cfg.safety_margin_ms
        self._networks: dict[str, Network] = {}
        self._net_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lanes: dict[str, _Lane] = {}
        self._done: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()
        self._inflight: set[int] = set()  # outbox row ids handed to a lane (dispatcher only)
        self._max_in_flight = 1024
        self._queued_left = False  # batched mode: legs or decisions wait for a batch
        self._delayed: set[int] = set()
        self._held_lock = threading.Lock()
        self._held: tuple[Any, int] | None = None  # a reordered row and when it was held

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, *, threads: bool = True) -> None:
        store.create_schema(self.engine)
        self.sim.seed({k: dict(v) for k, v in self.cfg.sim_accounts.items()})
        if self.cfg.gateway_endpoint:
            self._upsert_participant(
                self.cfg.gateway_bic,
                "KZT",
                self.cfg.gateway_endpoint,
                self.cfg.gateway_cert_pem,
                token=None,
            )
        self._load_networks()
        self.process_pending_inbox(older_than_ms=0)
        if threads:
            for target, name in (
                (self._dispatch_loop, "dispatcher"),
                (self._sweeper_loop, "sweeper"),
            ):
                t = threading.Thread(target=target, name=f"connector-{name}", daemon=True)
                t.start()
                self._threads.append(t)
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            for _ in lane.threads:
                lane.queue.put(None)
        for lane in lanes:
            for t in lane.threads:
                t.join(timeout=10)
            lane.http.close()

    def _tx(self) -> Any:
        return self.engine.begin()

    # --- participants -----------------------------------------------------------------------

    def _load_networks(self) -> None:
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(sa.select(participants).order_by(participants.c.registered_at))
            )
        with self._net_lock:
            self._networks = {
                r.bic: Network(r.bic, r.currency, r.endpoint, r.cert_pem) for r in rows
            }

    def _upsert_participant(
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
        with self._tx() as conn:
            key = participants.c.bic == bic
            if conn.execute(sa.select(participants.c.bic).where(key)).first() is None:
                conn.execute(participants.insert().values(bic=bic, **values))
            else:
                if token is None:
                    del values["token_sha256"]
                conn.execute(participants.update().where(key).values(**values))
        self._load_networks()

    def register_participant(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        bic = check_bic(data.get("bic"), "bic")
        currency = data.get("currency")
        if currency not in CURRENCY_EXPONENTS:
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
        self._upsert_participant(bic, str(currency), endpoint, cert, token)
        return {"bic": bic, "currency": currency, "endpoint": endpoint, "token": token}

    def list_participants(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(participants).order_by(participants.c.bic)))
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

    def authenticate(self, authorization: str | None) -> Network:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("a participant's bearer token is required")
        digest = hashlib.sha256(authorization.removeprefix("Bearer ").strip().encode()).hexdigest()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(participants).where(participants.c.token_sha256 == digest)
            ).first()
        if row is None:
            raise Unauthorized("unknown token")
        return Network(row.bic, row.currency, row.endpoint, row.cert_pem)

    def network_for(self, currency: str) -> Network | None:
        """The registered endpoint for ``currency`` (latest wins), else the simulated bank."""
        with self._net_lock:
            found = [n for n in self._networks.values() if n.currency == currency and n.endpoint]
        if found:
            return found[-1]
        bic = self.cfg.simulated_currencies.get(currency)
        return Network(bic, currency, None, None) if bic else None

    def _network(self, bic: str) -> Network | None:
        with self._net_lock:
            net = self._networks.get(bic)
        if net is not None and net.endpoint:
            return net
        if bic in self.sim.by_bic:
            return Network(bic, self.sim.by_bic[bic], None, None)
        return net

    # --- instructions and matching ----------------------------------------------------------

    def submit_instruction(self, principal: Network, data: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        iid = check_id(data.get("instruction_id"), "instruction_id")
        party = check_bic(data.get("party_bic"), "party_bic")
        counterparty = check_bic(data.get("counterparty_bic"), "counterparty_bic")
        legs_in = {}
        for name in ("sell", "buy"):
            part = data.get(name)
            if not isinstance(part, dict):
                raise InvalidInput(f"{name}: an object is required")
            legs_in[name] = _side(
                {**part, "bic": party, "receive_account": part.get("account")}, name
            )
        sell, buy = legs_in["sell"], legs_in["buy"]
        if sell.currency == buy.currency:
            raise InvalidInput("sell and buy currencies must differ")
        if party == counterparty:
            raise InvalidInput("a party cannot trade with itself")
        if principal.bic != party and principal.currency != sell.currency:
            raise Unauthorized(f"{principal.bic} may not instruct for {party}")
        value_time = parse_time(str(data.get("value_time")), "value_time")
        terms: tuple[object, ...] = (iid, party, counterparty, value_time)
        for side in (sell, buy):
            terms += (side.currency, side.amount, side.account)
        body_hash = hashlib.sha256(repr(terms).encode()).hexdigest()
        row = {
            "instruction_id": iid,
            "party_bic": party,
            "counterparty_bic": counterparty,
            "sell_currency": sell.currency,
            "sell_amount": sell.amount,
            "sell_account": sell.account,
            "buy_currency": buy.currency,
            "buy_amount": buy.amount,
            "buy_account": buy.account,
            "value_time": value_time,
            "body_sha256": body_hash,
            "submitted_by": principal.bic,
        }
        matched: str | None = None
        with self._tx() as conn:
            old = conn.execute(
                sa.select(instructions).where(
                    (instructions.c.party_bic == party) & (instructions.c.instruction_id == iid)
                )
            ).first()
            if old is not None:
                if old.body_sha256 != body_hash:
                    raise IdempotencyConflict(f"instruction {iid} exists with another body")
                return 200, self._instruction_view(old._mapping)
            conn.execute(instructions.insert().values(**row, created_at=now_ms()))
            matched = self._match(conn, row)
            if matched is None and counterparty in self.cfg.auto_counter_instruct:
                mirror = self._mirror(row, dict(self.cfg.auto_counter_instruct[counterparty]))
                conn.execute(instructions.insert().values(**mirror, created_at=now_ms()))
                matched = self._match(conn, mirror)
            result = {**row, "pvp_id": matched}
        if matched is not None:
            self._after_matched(matched)
        return 201, self._instruction_view(result)

    @staticmethod
    def _instruction_view(row: Any) -> dict[str, Any]:
        return {
            "instruction_id": row["instruction_id"],
            "party_bic": row["party_bic"],
            "counterparty_bic": row["counterparty_bic"],
            "status": "matched" if row["pvp_id"] else "open",
            "pvp_id": row["pvp_id"],
        }

    def _mirror(self, row: dict[str, Any], accounts: dict[str, str]) -> dict[str, Any]:
        try:
            sell_acc, buy_acc = accounts[row["buy_currency"]], accounts[row["sell_currency"]]
        except KeyError as exc:
            raise Unprocessable(f"auto counterparty has no {exc.args[0]} account") from None
        iid = (
            "auto-"
            + hashlib.sha256(f"{row['party_bic']}/{row['instruction_id']}".encode()).hexdigest()[
                :28
            ]
        )
        return {
            **row,
            "instruction_id": iid,
            "party_bic": row["counterparty_bic"],
            "counterparty_bic": row["party_bic"],
            "sell_currency": row["buy_currency"],
            "sell_amount": row["buy_amount"],
            "sell_account": sell_acc,
            "buy_currency": row["sell_currency"],
            "buy_amount": row["sell_amount"],
            "buy_account": buy_acc,
            "body_sha256": "auto",
            "submitted_by": self.bic,
        }

    def _match(self, conn: Connection, row: dict[str, Any]) -> str | None:
        window = int(self.cfg.match_window_seconds * 1000)
        i = instructions.c
        other = conn.execute(
            sa.select(instructions)
            .where(
                (i.party_bic == row["counterparty_bic"])
                & (i.counterparty_bic == row["party_bic"])
                & i.pvp_id.is_(None)
                & (i.sell_currency == row["buy_currency"])
                & (i.sell_amount == row["buy_amount"])
                & (i.buy_currency == row["sell_currency"])
                & (i.buy_amount == row["sell_amount"])
                & (i.value_time >= row["value_time"] - window)
                & (i.value_time <= row["value_time"] + window)
            )
            .order_by(i.id)
            .limit(1)
        ).first()
        if other is None:
            return None
        a = Side(
            row["party_bic"],
            row["sell_currency"],
            row["sell_amount"],
            row["sell_account"],
            row["buy_account"],
            row["instruction_id"],
        )
        b = Side(
            other.party_bic,
            other.sell_currency,
            other.sell_amount,
            other.sell_account,
            other.buy_account,
            other.instruction_id,
        )
        pvp_id = new_id("PVP")
        self._create_pvp(conn, pvp_id, a, b, min(row["value_time"], other.value_time))
        conn.execute(
            instructions.update()
            .where(
                ((i.party_bic == row["party_bic"]) & (i.instruction_id == row["instruction_id"]))
                | (i.id == other.id)
            )
            .values(pvp_id=pvp_id)
        )
        return pvp_id

    def create_trade(self, data: Any) -> tuple[int, dict[str, Any]]:
        """Test shortcut: a matched trade without instructions."""
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        a, b = _side(data.get("a"), "a"), _side(data.get("b"), "b")
        if a.currency == b.currency or a.bic == b.bic:
            raise InvalidInput("the two sides need different currencies and parties")
        deadline = parse_time(str(data.get("value_time")), "value_time")
        pvp_id = check_id(data.get("pvp_id") or new_id("PVP"), "pvp_id")
        with self._tx() as conn:
            if conn.execute(sa.select(pvps.c.id).where(pvps.c.id == pvp_id)).first() is not None:
                raise Conflict(f"PvP {pvp_id} exists")
            self._create_pvp(conn, pvp_id, a, b, deadline)
        self._after_matched(pvp_id)
        return 201, self.pvp_view(pvp_id)

    def _leg_names(self, a: Side, b: Side) -> tuple[str, str]:
        if a.currency == "KZT":
            return "DT", "FX"
        if b.currency == "KZT":
            return "FX", "DT"
        return "A", "B"

    def _create_pvp(self, conn: Connection, pvp_id: str, a: Side, b: Side, deadline: int) -> None:
        nets = []
        for side in (a, b):
            net = self.network_for(side.currency)
            if net is None:
                raise Unprocessable(f"no network settles {side.currency}: register one")
            nets.append(net)
        secret = secrets.token_hex(32)
        condition = hashlib.sha256(bytes.fromhex(secret)).hexdigest()
        now = now_ms()
        conn.execute(
            pvps.insert().values(
                id=pvp_id,
                deadline=deadline,
                condition=condition,
                secret=secret,
                state="pending",
                created_at=now,
            )
        )
        names = self._leg_names(a, b)
        batched = self.cfg.batch_max > 1
        for side, other, net, leg in ((a, b, nets[0], names[0]), (b, a, nets[1], names[1])):
            conn.execute(
                legs.insert().values(
                    pvp_id=pvp_id,
                    leg=leg,
                    uetr=str(uuid.uuid4()),
                    network_bic=net.bic,
                    currency=side.currency,
                    amount=side.amount,
                    debtor_bic=side.bic,
                    debtor_account=side.account,
                    creditor_bic=other.bic,
                    creditor_account=other.receive_account,
                    end_to_end_id=side.reference,
                    pacs009_msg_id=new_id(),
                    status="queued" if batched else "instructed",
                    acknowledged=False,
                )
            )
        if not batched:
            for leg_row in conn.execute(sa.select(legs).where(legs.c.pvp_id == pvp_id)):
                pvp_row = conn.execute(sa.select(pvps).where(pvps.c.id == pvp_id)).one()
                msg = Pacs009(
                    msg_id=leg_row.pacs009_msg_id,
                    created=datetime.now(UTC),
                    transactions=(self._credit_transfer(pvp_row, leg_row),),
                )
                self._enqueue(conn, [pvp_id], leg_row.network_bic, msg)

    def _credit_transfer(self, pvp: Any, leg: Any) -> CreditTransfer:
        deadline_dt = ms_to_dt(pvp.deadline)
        return CreditTransfer(
            end_to_end_id=leg.end_to_end_id,
            uetr=leg.uetr,
            amount=Money(leg.amount, leg.currency),
            settlement_date=deadline_dt.date(),
            deadline=deadline_dt.timetz().replace(microsecond=0),
            debtor_bic=leg.debtor_bic,
            debtor_account=leg.debtor_account,
            debtor_agent_bic=leg.debtor_bic,
            creditor_agent_bic=leg.creditor_bic,
            creditor_bic=leg.creditor_bic,
            creditor_account=leg.creditor_account,
            pvp=PvPTerms(pvp_id=pvp.id, leg=leg.leg, condition=pvp.condition),
        )

    def flush_batches(self, *, force: bool = False) -> int:
        """Batched mode: queued legs -> one multi-transaction pacs.009 per network, once
        ``batch_max`` legs wait or the oldest waited ``batch_linger_ms``; queued decisions ->
        one pacs.002 (COMMIT) or camt.056 (ABORT) per network. Returns rows made."""
        if self.cfg.batch_max <= 1:
            return 0
        made = 0
        left = False
        cutoff = now_ms() - self.cfg.batch_linger_ms
        with self._tx() as conn:
            rows = list(
                conn.execute(
                    sa.select(legs, pvps.c.created_at, pvps.c.deadline, pvps.c.condition)
                    .join(pvps, pvps.c.id == legs.c.pvp_id)
                    .where((legs.c.status == "queued") & (pvps.c.state == "pending"))
                    .order_by(pvps.c.created_at, legs.c.pvp_id, legs.c.leg)
                    .limit(self.cfg.batch_max * 20)
                )
            )
            groups: dict[str, list[Any]] = {}
            for r in rows:
                groups.setdefault(r.network_bic, []).append(r)
            for dest, group in groups.items():
                for i in range(0, len(group), self.cfg.batch_max):
                    chunk = group[i : i + self.cfg.batch_max]
                    full = len(chunk) == self.cfg.batch_max
                    if not (force or full or chunk[0].created_at <= cutoff):
                        left = True
                        continue
                    msg = Pacs009(
                        msg_id=new_id(),
                        created=datetime.now(UTC),
                        transactions=tuple(
                            self._credit_transfer(_PvPRef(r.pvp_id, r.deadline, r.condition), r)
                            for r in chunk
                        ),
                    )
                    self._enqueue(conn, [r.pvp_id for r in chunk], dest, msg)
                    for r in chunk:
                        self._update_leg(conn, r, status="instructed", pacs009_msg_id=msg.msg_id)
                    made += 1
            made += self._flush_decisions(conn)
        self._queued_left = left or len(rows) == self.cfg.batch_max * 20
        return made

    def _flush_decisions(self, conn: Connection) -> int:
        rows = list(
            conn.execute(
                sa.select(
                    legs,
                    pvps.c.deadline,
                    pvps.c.condition,
                    pvps.c.secret,
                    decisions.c.decision,
                    decisions.c.reason.label("decision_reason"),
                )
                .join(pvps, pvps.c.id == legs.c.pvp_id)
                .join(decisions, decisions.c.pvp_id == legs.c.pvp_id)
                .where(legs.c.decision_queued.is_(True))
                .order_by(decisions.c.decided_at, legs.c.pvp_id, legs.c.leg)
                .limit(self.cfg.batch_max * 20)
            )
        )
        groups: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            groups.setdefault((r.network_bic, r.decision), []).append(r)
        made = 0
        for (dest, decision), group in groups.items():
            for i in range(0, len(group), self.cfg.batch_max):
                chunk = group[i : i + self.cfg.batch_max]
                items = [
                    (_PvPSecret(r.pvp_id, r.deadline, r.condition, r.secret), r, r.decision_reason)
                    for r in chunk
                ]
                msg = self._decision_message(dest, decision, items)
                self._enqueue(conn, [r.pvp_id for r in chunk], dest, msg)
                made += 1
        if rows:
            conn.execute(
                legs.update()
                .where(
                    (legs.c.pvp_id == sa.bindparam("k_pvp")) & (legs.c.leg == sa.bindparam("k_leg"))
                )
                .values(decision_queued=False),
                [{"k_pvp": r.pvp_id, "k_leg": r.leg} for r in rows],
            )
        return made

    def _after_matched(self, pvp_id: str) -> None:
        crash_point("connector.matched", self.settings.faults)
        self.faults.crash_after("matched", pvp_id)
        self._wake.set()

    # --- outbox -----------------------------------------------------------------------------

    def _enqueue(self, conn: Connection, pvp_ids: list[str], dest: str, msg: Message) -> None:
        raw = build(msg, header_for(msg, from_bic=self.bic, to_bic=dest))
        net = self._network(dest)
        if net is not None and net.endpoint:
            raw = sign_envelope(raw, self.key_pem, self.cert_pem)
        now = now_ms()
        conn.execute(
            outbox.insert().values(
                destination_bic=dest,
                msg_def_id=msg.MESSAGE_ID,
                msg_id=msg.id,
                pvp_id=pvp_ids[0] if len(pvp_ids) == 1 else None,
                payload=raw,
                created_at=now,
                available_at=now,
                attempts=0,
            )
        )
        self._log(conn, pvp_ids, "out", dest, msg.MESSAGE_ID, msg.id, raw)

    def _log(
        self,
        conn: Connection,
        pvp_ids: list[str],
        direction: str,
        peer: str,
        name: str,
        msg_id: str,
        raw: bytes,
    ) -> None:
        sha = hashlib.sha256(raw).hexdigest()
        at = now_ms()
        for pvp_id in dict.fromkeys(pvp_ids):
            conn.execute(
                pvp_messages.insert().values(
                    pvp_id=pvp_id,
                    direction=direction,
                    peer_bic=peer,
                    msg_def_id=name,
                    msg_id=msg_id,
                    sha256=sha,
                    raw=raw,
                    at=at,
                )
            )

    # --- delivery ---------------------------------------------------------------------------
    #
    # The *dispatcher* thread picks due outbox rows and hands each to the lane of its
    # destination network. A lane has ``senders_per_network`` threads and its own pooled HTTP
    # client; a simulated bank's lane runs the bank's handling and the connector's processing
    # of its answers. Lanes report back to the dispatcher, which marks every row delivered
    # since its last round sent in one transaction (then fires the crash points of delivery).

    def _lane(self, dest: str) -> _Lane:
        lane = self._lanes.get(dest)
        if lane is None:
            n = max(1, self.cfg.senders_per_network)
            lane = _Lane(
                dest,
                queue.SimpleQueue(),
                httpx.Client(
                    timeout=self.cfg.http_timeout_seconds,
                    limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                ),
            )
            self._lanes[dest] = lane
            for i in range(n):
                t = threading.Thread(
                    target=self._lane_loop, args=(lane,), name=f"connector-send-{dest}-{i}"
                )
                t.daemon = True
                t.start()
                lane.threads.append(t)
        return lane

    def _dispatch_loop(self) -> None:
        linger = self.cfg.batch_linger_ms / 1000
        while not self._stop.is_set():
            self._wake.wait(timeout=linger if self._queued_left else 0.2)
            self._wake.clear()
            try:
                self._finish_delivered()
                if self.cfg.batch_max > 1:
                    self._stop.wait(linger)
                    self._finish_delivered()
                    self.flush_batches()
                self._dispatch_due()
            except Exception:
                log.exception("connector dispatcher failed; retrying")
                self._stop.wait(0.2)

    def _dispatch_due(self) -> int:
        """Hand the due rows not in flight to their lanes; returns how many."""
        room = self._max_in_flight - len(self._inflight)
        if room <= 0:
            return 0
        now = now_ms()
        with self.engine.connect() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    sa.select(outbox.c.id)
                    .where(outbox.c.sent_at.is_(None) & (outbox.c.available_at <= now))
                    .order_by(outbox.c.id)
                    .limit(len(self._inflight) + room)
                )
                if r.id not in self._inflight
            ][:room]
            rows = (
                list(
                    conn.execute(
                        sa.select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
                    )
                )
                if ids
                else []
            )
        for row in rows:
            if row.sent_at is not None:
                continue
            self._inflight.add(row.id)
            self._lane(row.destination_bic).queue.put(row)
        return len(rows)

    def _lane_loop(self, lane: _Lane) -> None:
        while True:
            row = lane.queue.get()
            if row is None:
                return
            try:
                outcome = self._deliver(row, lane)
            except Exception:
                log.exception("delivery of outbox row %s failed", row.id)
                outcome = "retry"
            self._done.put((row, outcome))
            self._wake.set()

    def _finish_delivered(self) -> None:
        done: list[tuple[Any, str]] = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        sent = [row for row, outcome in done if outcome == "sent"]
        if sent:
            at = now_ms()
            with self._tx() as conn:
                conn.execute(
                    outbox.update()
                    .where(outbox.c.id == sa.bindparam("row_id"))
                    .values(sent_at=at, attempts=sa.bindparam("new_attempts")),
                    [{"row_id": r.id, "new_attempts": r.attempts + 1} for r in sent],
                )
        for row, outcome in done:
            if outcome != "held":
                self._inflight.discard(row.id)
        for row in sent:
            step = "sent_pacs009" if row.msg_def_id == PACS009 else "sent_decision"
            if row.msg_def_id in (PACS009, "pacs.002.001.10", "camt.056.001.08"):
                crash_point(f"connector.{step}", self.settings.faults)
                self.faults.crash_after(step, row.pvp_id)
        with self._held_lock:
            held = self._held
            if held is not None and (
                any(r.id != held[0].id for r in sent) or now_ms() - held[1] > 1000
            ):
                # Something was delivered after it (or nothing came for a second): send it now.
                self._held = None
                self._inflight.discard(held[0].id)

    def _deliver(self, row: Any, lane: _Lane) -> str:
        """Deliver one row, faults applied: ``sent``, ``retry`` (rescheduled) or ``held``."""
        f = self.faults
        kw = {
            "pvp_id": row.pvp_id,
            "message_type": row.msg_def_id,
            "destination_bic": row.destination_bic,
        }
        if row.id not in self._delayed and (rule := f.fire("delay", **kw)) is not None:
            self._delayed.add(row.id)
            self._reschedule(row, rule.delay_ms, attempts=row.attempts, error="fault: delay")
            return "retry"
        with self._held_lock:
            if self._held is None and f.fire("reorder", **kw) is not None:
                self._held = (row, now_ms())
                return "held"
        if f.fire("drop", **kw) is not None:
            self._reschedule(row, self._backoff(row.attempts + 1), row.attempts + 1, "fault: drop")
            return "retry"
        copies = 2 if f.fire("duplicate", **kw) is not None else 1
        try:
            for _ in range(copies):
                self._transmit(row, lane)
        except Exception as exc:
            log.warning("delivery of %s %s failed: %s", row.msg_def_id, row.msg_id, exc)
            self._reschedule(row, self._backoff(row.attempts + 1), row.attempts + 1, str(exc))
            return "retry"
        self._delayed.discard(row.id)
        return "sent"

    def _backoff(self, attempts: int) -> int:
        return int(min(self.cfg.retry_cap_ms, self.cfg.retry_base_ms * 2 ** max(0, attempts - 1)))

    def _reschedule(self, row: Any, delay_ms: int, attempts: int, error: str) -> None:
        with self._tx() as conn:
            conn.execute(
                outbox.update()
                .where(outbox.c.id == row.id)
                .values(available_at=now_ms() + delay_ms, attempts=attempts, last_error=error[:500])
            )

    def _transmit(self, row: Any, lane: _Lane) -> None:
        net = self._network(row.destination_bic)
        if net is None:
            raise RuntimeError(f"no network registered for {row.destination_bic}")
        if net.endpoint is None:
            self._deliver_simulated(row.payload, net.bic)
            return
        resp = lane.http.post(
            net.endpoint.rstrip("/") + "/iso20022/messages",
            content=row.payload,
            headers={"Content-Type": "application/xml"},
        )
        if resp.status_code == 202:
            return
        if resp.status_code == 400:
            # Refused for good (admi.002): the same bytes would be refused again.
            log.error("%s refused %s %s: %s", net.bic, row.msg_def_id, row.msg_id, resp.text[:500])
            return
        raise RuntimeError(f"HTTP {resp.status_code} from {net.bic}")

    # --- inbound ----------------------------------------------------------------------------

    def _reject(self, exc: MessageRejected, to_bic: str | None) -> Inbound:
        admi = admi002_for(exc)
        raw = build(admi, header_for(admi, from_bic=self.bic, to_bic=to_bic or self.bic))
        return Inbound(400, sign_envelope(raw, self.key_pem, self.cert_pem), xml=True)

    def receive_http(self, raw: bytes) -> Inbound:
        """``POST /iso20022/messages``: verify, store, acknowledge, process."""
        sender: str | None = None
        try:
            parsed = parse(raw, settings=self.settings.iso20022)
            if parsed.header is None:
                raise MessageRejected("FF01", "an envelope (AppHdr + Document) is required")
            sender = parsed.header.from_bic
            net = self._network(sender)
            if net is None or not net.cert_pem:
                raise SignatureInvalid(
                    f"sender {sender} is not registered with a certificate",
                    msg_id=parsed.header.biz_msg_id,
                )
            verify_envelope(raw, net.cert_pem)
            return self._accept(parsed, sender, raw)
        except MessageRejected as exc:
            log.warning("refused a message from %s: %r", sender, exc)
            return self._reject(exc, sender)

    def _deliver_simulated(self, raw: bytes, bic: str) -> None:
        """The simulated bank handles the message and the connector processes its answers in
        one transaction: all of it happens, or none (and the row is delivered again)."""
        after: list[Callable[[], None]] = []
        with self._tx() as conn:
            for answer in self.sim.handle(raw, bic, conn=conn):
                try:
                    parsed = parse(answer, settings=self.settings.iso20022)
                except MessageRejected as exc:
                    log.error("simulated %s sent an invalid message: %r", bic, exc)
                    continue
                msg = parsed.message
                sha = hashlib.sha256(answer).hexdigest()
                inbox_id = self._store_inbound(conn, msg, bic, sha, answer)
                if inbox_id is not None:
                    self._process(conn, msg, bic, answer, after)
                    conn.execute(
                        inbox.update().where(inbox.c.id == inbox_id).values(processed=True)
                    )
        for action in after:
            action()
        self._wake.set()

    def receive_trusted(self, raw: bytes, sender: str) -> None:
        """An answer of a simulated network (in process: validated, not signed)."""
        try:
            parsed = parse(raw, settings=self.settings.iso20022)
            self._accept(parsed, sender, raw)
        except MessageRejected as exc:
            log.error("simulated %s sent an invalid message: %r", sender, exc)

    def _accept(self, parsed: ParsedMessage, sender: str, raw: bytes) -> Inbound:
        """Store the message and process it in one transaction (one commit before the 202);
        if processing fails, store it alone: the sweeper processes it later."""
        msg = parsed.message
        sha = hashlib.sha256(raw).hexdigest()
        ack = {"msg_id": msg.id, "sha256": sha, "duplicate": False}
        after: list[Callable[[], None]] = []
        try:
            with self._tx() as conn:
                inbox_id = self._store_inbound(conn, msg, sender, sha, raw)
                if inbox_id is None:
                    return Inbound(202, {**ack, "duplicate": True})
                self._process(conn, msg, sender, raw, after)
                conn.execute(inbox.update().where(inbox.c.id == inbox_id).values(processed=True))
        except MessageRejected:
            raise
        except Exception:
            log.exception("processing inbound %s %s failed; stored for a retry", msg.id, sender)
            with self._tx() as conn:
                if self._store_inbound(conn, msg, sender, sha, raw) is None:
                    return Inbound(202, {**ack, "duplicate": True})
            return Inbound(202, ack)
        for action in after:
            action()
        self._wake.set()
        return Inbound(202, ack)

    def _store_inbound(
        self, conn: Connection, msg: Message, sender: str, sha: str, raw: bytes
    ) -> int | None:
        """The new inbox row's id; None for the same bytes again; DU01 for other bytes."""
        old = conn.execute(
            sa.select(inbox.c.sha256).where(
                (inbox.c.sender_bic == sender)
                & (inbox.c.msg_def_id == msg.MESSAGE_ID)
                & (inbox.c.msg_id == msg.id)
            )
        ).first()
        if old is not None:
            if old.sha256 != sha:
                raise MessageRejected(
                    "DU01", "message id already received with other content", msg_id=msg.id
                )
            return None
        inbox_id = conn.execute(
            inbox.insert().values(
                sender_bic=sender,
                msg_def_id=msg.MESSAGE_ID,
                msg_id=msg.id,
                sha256=sha,
                raw=raw,
                received_at=now_ms(),
                processed=False,
            )
        ).inserted_primary_key
        assert inbox_id is not None
        return int(inbox_id[0])

    def process_pending_inbox(self, older_than_ms: int) -> None:
        cutoff = now_ms() - older_than_ms
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    sa.select(inbox)
                    .where(inbox.c.processed.is_(False) & (inbox.c.received_at <= cutoff))
                    .order_by(inbox.c.id)
                )
            )
        for row in rows:
            try:
                parsed = parse(row.raw, settings=self.settings.iso20022)
            except MessageRejected:
                parsed = None
            self._process_inbox_row(row.id, parsed, row.sender_bic, row.raw)

    def _process_inbox_row(
        self, inbox_id: int, parsed: ParsedMessage | None, sender: str, raw: bytes
    ) -> None:
        after: list[Callable[[], None]] = []
        try:
            with self._tx() as conn:
                done = conn.execute(
                    sa.select(inbox.c.processed).where(inbox.c.id == inbox_id)
                ).scalar_one()
                if not done and parsed is not None:
                    self._process(conn, parsed.message, sender, raw, after)
                conn.execute(inbox.update().where(inbox.c.id == inbox_id).values(processed=True))
        except Exception:
            log.exception("processing inbound message %s failed; will retry", inbox_id)
            return
        for action in after:
            action()
        self._wake.set()

    def _leg_by_uetr(self, conn: Connection, uetr: str) -> tuple[Any, Any] | None:
        leg = conn.execute(sa.select(legs).where(legs.c.uetr == uetr)).first()
        if leg is None:
            return None
        q = sa.select(pvps).where(pvps.c.id == leg.pvp_id)
        if conn.dialect.name != "sqlite":
            q = q.with_for_update()
        pvp = conn.execute(q).one()
        leg = conn.execute(sa.select(legs).where(legs.c.uetr == uetr)).one()
        return pvp, leg

    def _decision(self, conn: Connection, pvp_id: str) -> Any:
        return conn.execute(sa.select(decisions).where(decisions.c.pvp_id == pvp_id)).first()

    def _process(
        self,
        conn: Connection,
        msg: Message,
        sender: str,
        raw: bytes,
        after: list[Callable[[], None]],
    ) -> None:
        touched: list[str] = []
        if isinstance(msg, Pacs002):
            for st in msg.transactions:
                found = self._leg_by_uetr(conn, st.original.uetr)
                if found is None:
                    log.warning("pacs.002 for unknown UETR %s from %s", st.original.uetr, sender)
                    continue
                touched.append(found[0].id)
                self._on_status(conn, found[0], found[1], st, after)
        elif isinstance(msg, Camt029):
            for res in msg.transactions:
                found = self._leg_by_uetr(conn, res.original.uetr)
                if found is None:
                    continue
                pvp, leg = found
                touched.append(pvp.id)
                status = "refused" if res.status == "RJCR" else "released"
                if leg.status in ("rejected", "settled"):
                    status = leg.status  # nothing was locked, or it could not be cancelled
                if status == "refused":
                    log.critical(
                        "PvP %s: %s refused the cancellation of %s", pvp.id, sender, leg.leg
                    )
                self._update_leg(conn, leg, status=status, acknowledged=True)
                self._maybe_complete(conn, pvp.id)
                after.append(functools.partial(self.faults.crash_after, "acknowledged", pvp.id))
        elif isinstance(msg, Pacs028):
            touched += self._on_status_request(conn, msg, sender, after)
        elif isinstance(msg, Admi002):
            log.error(
                "%s rejected our message %s: %s %s",
                sender,
                msg.related_ref,
                msg.reason,
                msg.description,
            )
            row = conn.execute(
                sa.select(outbox.c.pvp_id).where(outbox.c.msg_id == msg.related_ref)
            ).first()
            if row is not None and row.pvp_id:
                touched.append(row.pvp_id)
        else:
            log.warning("%s sent %s: not expected by the connector", sender, msg.MESSAGE_ID)
        if touched:
            self._log(conn, touched, "in", sender, msg.MESSAGE_ID, msg.id, raw)

    def _update_leg(self, conn: Connection, leg: Any, **values: Any) -> None:
        conn.execute(
            legs.update()
            .where((legs.c.pvp_id == leg.pvp_id) & (legs.c.leg == leg.leg))
            .values(**values)
        )

    def _on_status(
        self,
        conn: Connection,
        pvp: Any,
        leg: Any,
        st: TransactionStatus,
        after: list[Callable[[], None]],
    ) -> None:
        decision = self._decision(conn, pvp.id)
        if st.status == "ACSP":
            if leg.status == "instructed":
                self._update_leg(conn, leg, status="locked", locked_at=now_ms())
                after.append(lambda: self.faults.crash_after("received_acsp", pvp.id))
            if decision is None:
                self._try_commit(conn, pvp, after)
            elif decision.decision == "ABORT":
                # Locked after the abort (a late or re-sent pacs.009): cancel it again, and
                # wait for a new camt.029 even if an earlier one came.
                self._update_leg(conn, leg, status="locked", acknowledged=False)
                conn.execute(pvps.update().where(pvps.c.id == pvp.id).values(state="aborted"))
                self._send_decision(conn, pvp, leg, "ABORT", decision.reason)
        elif st.status == "ACSC":
            if decision is None or decision.decision != "COMMIT":
                log.critical("PvP %s leg %s settled without COMMIT", pvp.id, leg.leg)
            self._update_leg(conn, leg, status="settled", acknowledged=True)
            self._maybe_complete(conn, pvp.id)
            after.append(lambda: self.faults.crash_after("acknowledged", pvp.id))
        elif st.status == "RJCT":
            if leg.status == "instructed":
                self._update_leg(conn, leg, status="rejected", reason=st.reason)
                if decision is None:
                    self._decide(
                        conn,
                        pvp,
                        "ABORT",
                        st.reason or "NARR",
                        f"leg {leg.leg} rejected by {leg.network_bic}",
                        after,
                    )
            elif decision is not None and decision.decision == "ABORT" and st.reason == "DS02":
                self._update_leg(conn, leg, status="released", acknowledged=True)
                self._maybe_complete(conn, pvp.id)
            else:
                log.error(
                    "PvP %s leg %s: RJCT %s in state %s", pvp.id, leg.leg, st.reason, leg.status
                )

    def _try_commit(self, conn: Connection, pvp: Any, after: list[Callable[[], None]]) -> None:
        rows = list(conn.execute(sa.select(legs).where(legs.c.pvp_id == pvp.id)))
        if all(r.status == "locked" for r in rows) and now_ms() < pvp.deadline - self.margin:
            self._decide(conn, pvp, "COMMIT", None, "both legs locked in time", after)

    def _decide(
        self,
        conn: Connection,
        pvp: Any,
        decision: str,
        reason: str | None,
        detail: str,
        after: list[Callable[[], None]],
    ) -> None:
        """Record THE decision and queue its delivery to every leg, in the caller's tx."""
        if self._decision(conn, pvp.id) is not None:
            return
        conn.execute(
            decisions.insert().values(
                pvp_id=pvp.id,
                decision=decision,
                reason=reason,
                detail=detail[:300],
                decided_at=now_ms(),
            )
        )
        conn.execute(
            pvps.update()
            .where(pvps.c.id == pvp.id)
            .values(state="committed" if decision == "COMMIT" else "aborted")
        )
        for leg in conn.execute(sa.select(legs).where(legs.c.pvp_id == pvp.id)):
            self._send_decision(conn, pvp, leg, decision, reason)
        log.info("PvP %s: %s (%s)", pvp.id, decision, detail)

        def crash() -> None:
            crash_point("connector.decided", self.settings.faults)
            self.faults.crash_after("decided", pvp.id)

        after.insert(0, crash)

    def _original(self, leg: Any) -> OriginalRef:
        return OriginalRef(
            msg_id=leg.pacs009_msg_id,
            msg_name_id=PACS009,
            end_to_end_id=leg.end_to_end_id,
            uetr=leg.uetr,
        )

    def _decision_status(
        self, pvp: Any, leg: Any, decision: str, reason: str | None
    ) -> TransactionStatus:
        if decision == "COMMIT":
            return TransactionStatus(
                original=self._original(leg),
                status="ACSP",
                pvp=PvPTerms(
                    pvp_id=pvp.id, leg=leg.leg, condition=pvp.condition, fulfilment=pvp.secret
                ),
            )
        return TransactionStatus(
            original=self._original(leg), status="RJCT", reason=reason or "NARR"
        )

    def _redeliver_at(self, leg: Any) -> int:
        """Exponential backoff of re-sending a decision: it does not pile up under backlog."""
        wait = self.cfg.redeliver_after_ms * 2 ** min(int(leg.redeliveries or 0), 16)
        return now_ms() + int(min(self.cfg.redeliver_cap_ms, wait))

    def _cancellation(self, pvp: Any, leg: Any, reason: str | None) -> CancellationRequest:
        return CancellationRequest(
            cancellation_id=new_id("X"),
            original=self._original(leg),
            amount=Money(leg.amount, leg.currency),
            settlement_date=ms_to_dt(pvp.deadline).date(),
            reason=reason if reason and re.fullmatch(r"[A-Z0-9]{4}", reason) else None,
        )

    def _decision_message(
        self, dest: str, decision: str, items: list[tuple[Any, Any, str | None]]
    ) -> Message:
        """One pacs.002 (COMMIT: ACSP + fulfilment) or camt.056 (ABORT) for (pvp, leg, reason)
        items, all to the network ``dest``."""
        if decision == "COMMIT":
            return Pacs002(
                msg_id=new_id(),
                created=datetime.now(UTC),
                transactions=tuple(
                    self._decision_status(p, leg, decision, r) for p, leg, r in items
                ),
            )
        return Camt056(
            assignment_id=new_id(),
            assigner_bic=self.bic,
            assignee_bic=dest,
            created=datetime.now(UTC),
            transactions=tuple(self._cancellation(p, leg, r) for p, leg, r in items),
        )

    def _send_decision(
        self, conn: Connection, pvp: Any, leg: Any, decision: str, reason: str | None
    ) -> None:
        at = {"decision_sent_at": now_ms(), "redeliver_at": self._redeliver_at(leg)}
        if self.cfg.batch_max > 1:
            # Grouped with other decisions to the same network by flush_batches.
            self._update_leg(conn, leg, decision_queued=True, **at)
            return
        msg = self._decision_message(leg.network_bic, decision, [(pvp, leg, reason)])
        self._enqueue(conn, [pvp.id], leg.network_bic, msg)
        self._update_leg(conn, leg, **at)

    def _maybe_complete(self, conn: Connection, pvp_id: str) -> None:
        pending = conn.execute(
            sa.select(sa.func.count()).where(
                (legs.c.pvp_id == pvp_id) & legs.c.acknowledged.is_(False)
            )
        ).scalar_one()
        if pending == 0:
            conn.execute(
                pvps.update()
                .where(pvps.c.id == pvp_id)
                .values(
                    state=sa.case(
                        (pvps.c.state == "committed", "settled"),
                        (pvps.c.state == "aborted", "cancelled"),
                        else_=pvps.c.state,
                    )
                )
            )

    def _on_status_request(
        self, conn: Connection, msg: Pacs028, sender: str, after: list[Callable[[], None]]
    ) -> list[str]:
        answers: list[TransactionStatus] = []
        touched: list[str] = []
        for req in msg.transactions:
            found = self._leg_by_uetr(conn, req.original.uetr)
            if found is None:
                answers.append(
                    TransactionStatus(
                        original=req.original,
                        status="RJCT",
                        reason="NARR",
                        additional_info="unknown UETR",
                    )
                )
                continue
            pvp, leg = found
            touched.append(pvp.id)
            decision = self._decision(conn, pvp.id)
            if decision is None and now_ms() >= pvp.deadline - self.margin:
                self._decide(
                    conn, pvp, "ABORT", "TMOT", "deadline passed (asked by pacs.028)", after
                )
                decision = self._decision(conn, pvp.id)
            elif decision is not None and decision.decision == "ABORT" and not leg.acknowledged:
                self._send_decision(conn, pvp, leg, "ABORT", decision.reason)
            if decision is None:
                answers.append(TransactionStatus(original=self._original(leg), status="PDNG"))
            else:
                answers.append(self._decision_status(pvp, leg, decision.decision, decision.reason))
        reply = Pacs002(msg_id=new_id(), created=datetime.now(UTC), transactions=tuple(answers))
        self._enqueue(conn, touched or [], sender, reply)
        return touched

    # --- sweeper ----------------------------------------------------------------------------

    def _sweeper_loop(self) -> None:
        interval = self.cfg.sweep_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:
                log.exception("connector sweep failed")

    def sweep(self) -> None:
        now = now_ms()
        with self.engine.connect() as conn:
            overdue = [
                r.id
                for r in conn.execute(
                    sa.select(pvps.c.id)
                    .where((pvps.c.state == "pending") & (pvps.c.deadline - self.margin <= now))
                    .limit(500)
                )
            ]
            stale = list(
                conn.execute(
                    sa.select(legs.c.pvp_id, legs.c.leg)
                    .join(pvps, pvps.c.id == legs.c.pvp_id)
                    .where(
                        pvps.c.state.in_(("committed", "aborted"))
                        & legs.c.acknowledged.is_(False)
                        & (
                            (legs.c.redeliver_at <= now)
                            | (
                                legs.c.redeliver_at.is_(None)
                                & (legs.c.decision_sent_at <= now - self.cfg.redeliver_after_ms)
                            )
                        )
                    )
                    .limit(500)
                )
            )
        for pvp_id in overdue:
            self.abort_if_overdue(pvp_id)
        if stale:
            with self._tx() as conn:  # one transaction for the lot
                for pvp_id, leg_name in stale:
                    self._redeliver_in(conn, pvp_id, leg_name)
            self._wake.set()
        self.process_pending_inbox(older_than_ms=2000)
        held = self._held
        if held is not None and now_ms() - held[1] > 1000:
            self._wake.set()

    def abort_if_overdue(self, pvp_id: str) -> None:
        after: list[Callable[[], None]] = []
        with self._tx() as conn:
            q = sa.select(pvps).where(pvps.c.id == pvp_id)
            if conn.dialect.name != "sqlite":
                q = q.with_for_update()
            pvp = conn.execute(q).one()
            if pvp.state != "pending" or now_ms() < pvp.deadline - self.margin:
                return
            self._decide(conn, pvp, "ABORT", "TMOT", "deadline - margin passed", after)
        for action in after:
            action()
        self._wake.set()

    def _redeliver(self, pvp_id: str, leg_name: str) -> None:
        with self._tx() as conn:
            self._redeliver_in(conn, pvp_id, leg_name)
        self._wake.set()

    def _redeliver_in(self, conn: Connection, pvp_id: str, leg_name: str) -> None:
        pvp = conn.execute(sa.select(pvps).where(pvps.c.id == pvp_id)).one()
        leg = conn.execute(
            sa.select(legs).where((legs.c.pvp_id == pvp_id) & (legs.c.leg == leg_name))
        ).one()
        unsent = conn.execute(
            sa.select(sa.func.count()).where(
                (outbox.c.pvp_id == pvp_id)
                & (outbox.c.destination_bic == leg.network_bic)
                & outbox.c.sent_at.is_(None)
            )
        ).scalar_one()
        decision = self._decision(conn, pvp_id)
        if leg.acknowledged or decision is None:
            return
        if unsent or leg.decision_queued:
            # Not even sent yet (a backlog): wait another period, no new message.
            self._update_leg(
                conn, leg, decision_sent_at=now_ms(), redeliver_at=self._redeliver_at(leg)
            )
            return
        log.info("PvP %s: re-sending %s to %s", pvp_id, decision.decision, leg.network_bic)
        self._update_leg(conn, leg, redeliveries=leg.redeliveries + 1)
        leg = conn.execute(
            sa.select(legs).where((legs.c.pvp_id == pvp_id) & (legs.c.leg == leg_name))
        ).one()
        self._send_decision(conn, pvp, leg, decision.decision, decision.reason)

    # --- queries ----------------------------------------------------------------------------

    def pvp_view(self, pvp_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            pvp = conn.execute(sa.select(pvps).where(pvps.c.id == pvp_id)).first()
            if pvp is None:
                raise NotFound(f"no PvP {pvp_id}")
            decision = self._decision(conn, pvp_id)
            rows = list(
                conn.execute(sa.select(legs).where(legs.c.pvp_id == pvp_id).order_by(legs.c.leg))
            )
        return {
            "pvp_id": pvp.id,
            "state": pvp.state,
            "deadline": iso(pvp.deadline),
            "condition": pvp.condition,
            "decision": None
            if decision is None
            else {
                "decision": decision.decision,
                "reason": decision.reason,
                "detail": decision.detail,
                "decided_at": iso(decision.decided_at),
            },
            "completed": pvp.state in ("settled", "cancelled"),
            "legs": [
                {
                    "leg": r.leg,
                    "uetr": r.uetr,
                    "network_bic": r.network_bic,
                    "currency": r.currency,
                    "amount": r.amount,
                    "debtor_bic": r.debtor_bic,
                    "debtor_account": r.debtor_account,
                    "creditor_bic": r.creditor_bic,
                    "creditor_account": r.creditor_account,
                    "end_to_end_id": r.end_to_end_id,
                    "status": r.status,
                    "reason": r.reason,
                    "acknowledged": r.acknowledged,
                    "locked_at": iso(r.locked_at),
                }
                for r in rows
            ],
        }

    def pvp_messages(self, pvp_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            if conn.execute(sa.select(pvps.c.id).where(pvps.c.id == pvp_id)).first() is None:
                raise NotFound(f"no PvP {pvp_id}")
            rows = list(
                conn.execute(
                    sa.select(pvp_messages)
                    .where(pvp_messages.c.pvp_id == pvp_id)
                    .order_by(pvp_messages.c.id)
                )
            )
        return [
            {
                "seq": i,
                "direction": r.direction,
                "peer_bic": r.peer_bic,
                "message": r.msg_def_id,
                "msg_id": r.msg_id,
                "sha256": r.sha256,
                "at": iso(r.at),
                "xml": r.raw.decode("utf-8"),
            }
            for i, r in enumerate(rows, 1)
        ]


__all__ = ["Connector", "Inbound", "Network", "Side"]
