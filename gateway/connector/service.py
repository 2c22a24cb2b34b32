"""The orchestrator: participant registry, matching, PvP decisions, delivery and recovery.

One durable decision per PvP (``decisions`` row, final by the store's triggers), taken in the
same transaction as the outbox rows that deliver it. Threads:

- the *lanes*, per network, deliver outbox rows as soon as they are committed (handed over
  by the committing thread, or by the *dispatcher* for retries and batches), to the simulated
  networks in process or to registered endpoints over HTTP (signed), with exponential backoff
  until the receiver's technical acknowledgement; faults apply here;
- the *sweeper* aborts PvPs whose deadline - margin passed without both locks, re-sends
  decisions not acknowledged (ACSC / camt.029) in time, and retries unprocessed inbound
  messages.

After a crash, :meth:`Connector.start` resumes from the database alone: unsent outbox rows
are sent, undecided PvPs past their deadline are aborted, decided ones are re-delivered.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import queue
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.config import Settings
from gateway.connector import store
from gateway.connector.faults import Faults
from gateway.connector.keys import load_or_create_identity
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms, participants
from gateway.errors import (
    Conflict,
    GatewayError,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from gateway.faults import crash_point
from gateway.ids import sortable_id
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
    TransactionStatus,
    admi002_for,
    build,
    header_for,
    parse,
)
from gateway.messaging.posting import Poster
from gateway.messaging.queues import take_queued
from gateway.sqlite.fastsql import run, savepoint
from gateway.sqlite.walsync import NO_SYNC
from gateway.threads import start_thread

log = logging.getLogger(__name__)

PACS009 = "pacs.009.001.08"
MAX_BULK_TRADES = 1000
_MAX_BUILT = 100_000
BIC_RE = re.compile(r"[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}")


def new_id(prefix: str = "C") -> str:
    return sortable_id(prefix)


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


@dataclass(frozen=True, slots=True)
class _Decision:
    decision: str
    reason: str | None


class _Found(NamedTuple):
    """A leg found by UETR: ``pvp`` and ``leg`` are the same row (see SELECT_LEG_BY_UETR)."""

    pvp: Any
    leg: Any
    decision: _Decision | None


@dataclass(frozen=True, slots=True)
class _Logged:
    """A message for the log of every PvP it concerns (its bytes are stored once)."""

    pvp_ids: tuple[str, ...]
    direction: str
    peer: str
    name: str
    msg_id: str
    raw: bytes
    sha256: str
    at: int


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A message to send, not yet written: its outbox row and its message log entry; to a
    simulated bank, also the message itself (``payload`` was built from it)."""

    outbox: dict[str, Any]
    log: _Logged
    message: Message | None = None


@dataclass(frozen=True, slots=True)
class _NewPvP:
    """A PvP not yet written: its row, its legs' rows (whole), and unbatched its pacs.009."""

    id: str
    pvp: dict[str, Any]
    legs: list[dict[str, Any]]
    outgoing: list[_Outgoing]


@dataclass(slots=True)
class _Lane:
    """Delivery to one network: a queue of outbox rows, its threads, its HTTP client."""

    dest: str
    queue: queue.SimpleQueue[Any]
    http: Poster
    threads: list[threading.Thread] = field(default_factory=list)


_SIM_BATCH = 32
"""Most deliveries to a simulated bank that one lane thread makes in one transaction."""
_RECORD_WITHIN = 0.05
"""Deliveries are recorded (``sent_at``) at most this many seconds late, several in one
transaction, or once this many wait:"""
_RECORD_MAX = 256


@contextmanager
def _savepoint_on(conn: Connection) -> Iterator[Connection]:
    with savepoint(conn):
        yield conn


@dataclass(frozen=True, slots=True)
class Inbound:
    status: int
    body: Any
    xml: bool = False


_LEG_VIEW_FIELDS = (
    "leg",
    "uetr",
    "network_bic",
    "currency",
    "amount",
    "debtor_bic",
    "debtor_account",
    "creditor_bic",
    "creditor_account",
    "end_to_end_id",
    "status",
    "reason",
    "acknowledged",
    "locked_at",
)


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without one."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    return authorization.removeprefix("Bearer ").strip()


def _pvp_view(
    pvp: Mapping[Any, Any],
    decision: Mapping[str, Any] | None,
    leg_rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A PvP as ``GET /v1/pvp/{pvp_id}`` shows it, from its rows."""
    views = []
    for leg in leg_rows:
        view = {name: leg[name] for name in _LEG_VIEW_FIELDS}
        view["locked_at"] = iso(leg["locked_at"])
        views.append(view)
    return {
        "pvp_id": pvp["id"],
        "state": pvp["state"],
        "deadline": iso(pvp["deadline"]),
        "condition": pvp["condition"],
        "decision": None
        if decision is None
        else {
            "decision": decision["decision"],
            "reason": decision["reason"],
            "detail": decision["detail"],
            "decided_at": iso(decision["decided_at"]),
        },
        "completed": pvp["state"] in ("settled", "cancelled"),
        "legs": views,
    }


def _side(data: Any, name: str) -> Side:
    if not isinstance(data, dict):
        raise InvalidInput(f"{name}: an object is required")
    currency = data.get("currency")
    amount = data.get("amount")
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
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
        # Set (after their commit) by transactions that queued outbox rows: the dispatcher
        # looks for due rows only then, or every poll (retries), not at each wake-up.
        self._fresh = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lanes: dict[str, _Lane] = {}
        self._done: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()
        # .conn, .after: the open batch of a simulated lane; .wrote: the message ids of the
        # outbox rows this thread queued since its last _notify(); .deferred: rows are handed
        # out after the answers (_answers_first)
        self._local = threading.local()
        self._inflight: set[int] = set()  # outbox row ids handed to a lane
        # Guards _inflight and _lanes, and makes a dispatch round (query, then hand out) one
        # step: rounds run on the dispatcher and on threads that have just committed rows.
        self._flight = threading.Lock()
        self._max_in_flight = 1024
        self._queued_left = False  # batched mode: legs or decisions wait for a batch
        self._unrecorded: list[Any] = []  # delivered outbox rows, sent_at not yet written
        self._unrecorded_since = 0.0
        self._delayed: set[int] = set()
        self._held_lock = threading.Lock()
        self._held: tuple[Any, int] | None = None  # a reordered row and when it was held
        # Messages to a simulated bank as built, by message id, until delivered: the bank
        # takes them typed instead of parsing back bytes built (and validated) from them.
        # Bounded; a message not found here (a restart, a redelivery) is parsed from its row.
        self._built: OrderedDict[str, Message] = OrderedDict()
        self._built_lock = threading.Lock()

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
                self._threads.append(start_thread(target, f"connector-{name}"))
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
        """A write transaction; inside a lane's batch (see ``_deliver_batch``), a savepoint
        of the batch's transaction on this thread."""
        batch = getattr(self._local, "conn", None)
        if batch is not None:
            return _savepoint_on(batch)
        return self.engine.begin()

    # --- participants -----------------------------------------------------------------------

    def _load_networks(self) -> None:
        with store.reader(self.engine) as conn:
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
        self._upsert_participant(bic, str(currency), endpoint, cert, token)
        return {"bic": bic, "currency": currency, "endpoint": endpoint, "token": token}

    def list_participants(self) -> list[dict[str, Any]]:
        with store.reader(self.engine) as conn:
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

    def authorize_admin(self, authorization: str | None) -> None:
        """Refuse an administrative request without ``connector.admin_token`` (if one is
        set) as its bearer token."""
        expected = self.cfg.admin_token
        if expected is None:
            return
        token = _bearer(authorization)
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
            rows = run(conn, store.SELECT_LEGS_OF, {"pvp_id": pvp_id}).all()
        concerned = {bic for r in rows for bic in (r.network_bic, r.debtor_bic, r.creditor_bic)}
        if principal.bic not in concerned:
            raise NotFound(f"no PvP {pvp_id}")

    def authenticate(self, authorization: str | None) -> Network:
        token = _bearer(authorization)
        if token is None:
            raise Unauthorized("a participant's bearer token is required")
        digest = hashlib.sha256(token.encode()).hexdigest()
        with store.reader(self.engine) as conn:
            row = run(conn, store.SELECT_PARTICIPANT_BY_TOKEN, {"digest": digest}).first()
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
            old = run(
                conn, store.SELECT_INSTRUCTION, {"party_bic": party, "instruction_id": iid}
            ).first()
            if old is not None:
                if old.body_sha256 != body_hash:
                    raise IdempotencyConflict(f"instruction {iid} exists with another body")
                return 200, self._instruction_view(old._mapping)
            run(conn, store.INSERT_INSTRUCTION, {**row, "created_at": now_ms()})
            matched = self._match(conn, row)
            if matched is None and counterparty in self.cfg.auto_counter_instruct:
                mirror = self._mirror(row, dict(self.cfg.auto_counter_instruct[counterparty]))
                run(conn, store.INSERT_INSTRUCTION, {**mirror, "created_at": now_ms()})
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
        other = run(
            conn,
            store.SELECT_MATCH,
            {
                "party_bic": row["counterparty_bic"],
                "counterparty_bic": row["party_bic"],
                "sell_currency": row["buy_currency"],
                "sell_amount": row["buy_amount"],
                "buy_currency": row["sell_currency"],
                "buy_amount": row["sell_amount"],
                "value_from": row["value_time"] - window,
                "value_to": row["value_time"] + window,
            },
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
        value_time = min(row["value_time"], other.value_time)
        self._insert_pvps(conn, [self._new_pvp(pvp_id, a, b, value_time)])
        run(
            conn,
            store.SET_INSTRUCTIONS_MATCHED,
            {
                "k_party_bic": row["party_bic"],
                "k_instruction_id": row["instruction_id"],
                "k_other_id": other.id,
                "k_pvp_id": pvp_id,
            },
        )
        return pvp_id

    def create_trade(self, data: Any) -> tuple[int, dict[str, Any]]:
        """Test shortcut: a matched trade without instructions."""
        new = self._trade(data)
        with self._tx() as conn:
            if run(conn, store.SELECT_PVP_ID, {"pvp_id": new.id}).first() is not None:
                raise Conflict(f"PvP {new.id} exists")
            self._insert_pvps(conn, [new])
        self._after_matched(new.id)
        # What was just written: no need to read it back.
        return 201, _pvp_view(new.pvp, None, new.legs)

    def create_trades(self, data: Any) -> tuple[int, dict[str, Any]]:
        """Test shortcut in bulk: ``{"trades": [<trade>, ...]}`` -> all of them in one
        transaction, or none (an invalid trade or a pvp_id that exists refuses the lot)."""
        if not isinstance(data, dict) or not isinstance(data.get("trades"), list):
            raise InvalidInput('trades: a list of trades is required ({"trades": [...]})')
        trades = data["trades"]
        if not 1 <= len(trades) <= MAX_BULK_TRADES:
            raise InvalidInput(f"trades: 1 to {MAX_BULK_TRADES} trades per request")
        news: list[_NewPvP] = []
        index: dict[str, int] = {}
        for i, trade in enumerate(trades):
            try:
                new = self._trade(trade)
            except GatewayError as exc:
                raise type(exc)(f"trades[{i}]: {exc.detail}") from None
            if new.id in index:
                raise InvalidInput(f"trades[{i}]: pvp_id {new.id} repeats trades[{index[new.id]}]")
            index[new.id] = i
            news.append(new)
        with self._tx() as conn:
            found = run(conn, store.SELECT_PVP_IDS_IN, {"pvp_ids": list(index)})
            existing = [r.id for r in found]
            if existing:
                first = min(existing, key=index.__getitem__)
                raise Conflict(f"trades[{index[first]}]: PvP {first} exists")
            self._insert_pvps(conn, news)
        for new in news:
            self._after_matched(new.id)
        return 201, {"pvp_ids": [new.id for new in news]}

    def _trade(self, data: Any) -> _NewPvP:
        """A trade's body (``POST /v1/trades``) -> the PvP to insert."""
        if not isinstance(data, dict):
            raise InvalidInput("a JSON object is required")
        a, b = _side(data.get("a"), "a"), _side(data.get("b"), "b")
        if a.currency == b.currency or a.bic == b.bic:
            raise InvalidInput("the two sides need different currencies and parties")
        deadline = parse_time(str(data.get("value_time")), "value_time")
        pvp_id = check_id(data.get("pvp_id") or new_id("PVP"), "pvp_id")
        return self._new_pvp(pvp_id, a, b, deadline)

    def _leg_names(self, a: Side, b: Side) -> tuple[str, str]:
        if a.currency == "KZT":
            return "DT", "FX"
        if b.currency == "KZT":
            return "FX", "DT"
        return "A", "B"

    def _new_pvp(self, pvp_id: str, a: Side, b: Side, deadline: int) -> _NewPvP:
        """The rows of a new PvP and, unbatched, its two pacs.009 (built before any
        transaction by a trade: the writer lock is not held while XML is built)."""
        nets = []
        for side in (a, b):
            net = self.network_for(side.currency)
            if net is None:
                raise Unprocessable(f"no network settles {side.currency}: register one")
            nets.append(net)
        secret = secrets.token_hex(32)
        condition = hashlib.sha256(bytes.fromhex(secret)).hexdigest()
        pvp = {
            "id": pvp_id,
            "deadline": deadline,
            "condition": condition,
            "secret": secret,
            "state": "pending",
            "created_at": now_ms(),
        }
        names = self._leg_names(a, b)
        batched = self.cfg.batch_max > 1
        leg_rows: list[dict[str, Any]] = [
            {
                "pvp_id": pvp_id,
                "leg": leg,
                "uetr": str(uuid.uuid4()),
                "network_bic": net.bic,
                "currency": side.currency,
                "amount": side.amount,
                "debtor_bic": side.bic,
                "debtor_account": side.account,
                "creditor_bic": other.bic,
                "creditor_account": other.receive_account,
                "end_to_end_id": side.reference,
                "pacs009_msg_id": new_id(),
                "status": "queued" if batched else "instructed",
                # The columns' defaults, given so that these dicts are whole rows.
                "reason": None,
                "locked_at": None,
                "acknowledged": False,
                "decision_sent_at": None,
                "decision_queued": False,
                "redeliver_at": None,
                "redeliveries": 0,
            }
            for side, other, net, leg in ((a, b, nets[0], names[0]), (b, a, nets[1], names[1]))
        ]
        leg_rows.sort(key=lambda r: str(r["leg"]))  # the legs' order everywhere else
        outgoing = []
        if not batched:
            ref = _PvPRef(pvp_id, deadline, condition)
            for row in leg_rows:
                msg = Pacs009(
                    msg_id=row["pacs009_msg_id"],
                    created=datetime.now(UTC),
                    transactions=(self._credit_transfer(ref, SimpleNamespace(**row)),),
                )
                outgoing.append(self._outgoing([pvp_id], row["network_bic"], msg))
        return _NewPvP(pvp_id, pvp, leg_rows, outgoing)

    def _insert_pvps(self, conn: Connection, news: list[_NewPvP]) -> None:
        """New PvPs, their legs and their pacs.009: one statement per table for them all."""
        run(conn, store.INSERT_PVP, [new.pvp for new in news])
        run(conn, store.INSERT_LEG, [leg for new in news for leg in new.legs])
        self._write_outgoing(conn, [out for new in news for out in new.outgoing])

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
            rows = run(conn, store.SELECT_QUEUED_LEGS, {"limit": self.cfg.batch_max * 20}).all()
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
                    # Instructed before the message is written: a simulated bank may answer
                    # it there and then (``_write_outgoing``).
                    run(
                        conn,
                        store.UPDATE_LEG,
                        [
                            {
                                "k_pvp": r.pvp_id,
                                "k_leg": r.leg,
                                "status": "instructed",
                                "pacs009_msg_id": msg.msg_id,
                            }
                            for r in chunk
                        ],
                    )
                    self._enqueue(conn, [r.pvp_id for r in chunk], dest, msg)
                    made += 1
            made += self._flush_decisions(conn)
        self._queued_left = left or len(rows) == self.cfg.batch_max * 20
        return made

    def _flush_decisions(self, conn: Connection) -> int:
        rows = run(conn, store.SELECT_QUEUED_DECISIONS, {"limit": self.cfg.batch_max * 20}).all()
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
            run(
                conn,
                store.UPDATE_LEG,
                [{"k_pvp": r.pvp_id, "k_leg": r.leg, "decision_queued": False} for r in rows],
            )
        return made

    def _after_matched(self, pvp_id: str) -> None:
        crash_point("connector.matched", self.settings.faults)
        self.faults.crash_after("matched", pvp_id)
        self._notify()

    # --- outbox -----------------------------------------------------------------------------

    def _enqueue(self, conn: Connection, pvp_ids: list[str], dest: str, msg: Message) -> None:
        self._write_outgoing(conn, [self._outgoing(pvp_ids, dest, msg)])

    def _outgoing(self, pvp_ids: list[str], dest: str, msg: Message) -> _Outgoing:
        """``msg`` to ``dest`` as an outbox row and its message log rows, not yet written."""
        net = self._network(dest)
        signer = self if net is not None and net.endpoint else None
        raw = build(msg, header_for(msg, from_bic=self.bic, to_bic=dest), signer=signer)
        simulated = net is not None and net.endpoint is None and dest in self.sim.by_bic
        if simulated:
            with self._built_lock:
                self._built[msg.id] = msg
                if len(self._built) > _MAX_BUILT:
                    self._built.popitem(last=False)
        now = now_ms()
        row = {
            "destination_bic": dest,
            "msg_def_id": msg.MESSAGE_ID,
            "msg_id": msg.id,
            "pvp_id": pvp_ids[0] if len(pvp_ids) == 1 else None,
            "payload": raw,
            "created_at": now,
            "available_at": now,
            "attempts": 0,
            "sent_at": None,
        }
        logged = self._logged(pvp_ids, "out", dest, msg.MESSAGE_ID, msg.id, raw)
        return _Outgoing(row, logged, msg if simulated else None)

    def _write_outgoing(self, conn: Connection, items: list[_Outgoing]) -> None:
        """Write messages to send in the caller's transaction. Those to a simulated bank are
        answered there and then when :meth:`_answer_inline` may: written as sent, followed by
        the bank's handling and the processing of its answers; the others go to the lanes
        after the commit."""
        if not items:
            return
        inline = [item for item in items if item.message is not None] if self._inline() else []
        if len(inline) < len(items):
            wrote = getattr(self._local, "wrote", None)
            if wrote is None:
                wrote = self._local.wrote = []
            answered = {id(item) for item in inline}
            wrote.extend(item.outbox["msg_id"] for item in items if id(item) not in answered)
        for item in inline:
            item.outbox["sent_at"] = item.outbox["created_at"]
            item.outbox["attempts"] = 1
        run(conn, store.INSERT_OUTBOX, [item.outbox for item in items])
        self._write_log(conn, [item.log for item in items])
        for item in inline:
            self._answer_inline(conn, item)

    def _inline(self) -> bool:
        """Whether a simulated bank answers in the sender's transaction (``sim_inline``):
        not while fault rules or crash points are set, which act on deliveries and their
        steps (and are what the after-actions of processing the answers fire)."""
        return (
            self.cfg.sim_inline
            and not self.faults.active()
            and not self.settings.faults.crash_points
        )

    def _answer_inline(self, conn: Connection, item: _Outgoing) -> None:
        """A simulated bank handles ``item`` and its answers are processed, in ``conn``'s
        transaction: what a delivery through its lane does (``_deliver_simulated``), without
        the transaction, the hand-over to the lane's thread and the record of the delivery
        of its own."""
        msg, row = item.message, item.outbox
        assert msg is not None
        with self._built_lock:
            self._built.pop(msg.id, None)
        after: list[Callable[[], None]] = []  # fault hooks only, and no rule is set
        self._simulated_turn(conn, row["payload"], row["destination_bic"], msg, after)

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
        self._write_log(conn, [self._logged(pvp_ids, direction, peer, name, msg_id, raw)])

    @staticmethod
    def _logged(
        pvp_ids: list[str], direction: str, peer: str, name: str, msg_id: str, raw: bytes
    ) -> _Logged:
        sha = hashlib.sha256(raw).hexdigest()
        pvps = tuple(dict.fromkeys(pvp_ids))
        return _Logged(pvps, direction, peer, name, msg_id, raw, sha, now_ms())

    @staticmethod
    def _write_log(conn: Connection, entries: list[_Logged]) -> None:
        """One log row per PvP a message concerns. The bytes of a message about several PvPs
        (a batch) go once into ``message_bodies``: stored per PvP, a batch of 100 was written
        100 times (1.6 GB of connector database for a 3000-PvP batched benchmark)."""
        rows: list[dict[str, Any]] = []
        for e in entries:
            base = {
                "direction": e.direction,
                "peer_bic": e.peer,
                "msg_def_id": e.name,
                "msg_id": e.msg_id,
                "sha256": e.sha256,
                "at": e.at,
            }
            if len(e.pvp_ids) == 1:
                rows.append({**base, "pvp_id": e.pvp_ids[0], "raw": e.raw, "body_id": None})
            elif e.pvp_ids:
                body = {"sha256": e.sha256, "raw": e.raw}
                body_id = run(conn, store.INSERT_MESSAGE_BODY, body).scalar_one()
                rows.extend(
                    {**base, "pvp_id": p, "raw": b"", "body_id": body_id} for p in e.pvp_ids
                )
        if rows:
            run(conn, store.INSERT_MESSAGE, rows)

    # --- delivery ---------------------------------------------------------------------------
    #
    # A thread that committed outbox rows hands them to the lanes of their destination
    # networks itself (``_hand_out``), or, a reception thread after its answers, delivers a
    # pair itself when their lanes are idle (``after_answers``); the *dispatcher* thread
    # picks due rows after a failed delivery, in batched mode, and at its poll. A lane has
    # ``senders_per_network`` threads and its own pooled HTTP client; a simulated bank's lane
    # runs the bank's handling and the connector's processing of its answers. Lanes report
    # back to the dispatcher, which marks every row delivered since its last round sent in one
    # transaction (then fires the crash points of delivery).

    def _lane(self, dest: str) -> _Lane:
        lane = self._lanes.get(dest)
        if lane is None:
            n = max(1, self.cfg.senders_per_network)
            lane = _Lane(
                dest,
                queue.SimpleQueue(),
                Poster(timeout=self.cfg.http_timeout_seconds, max_connections=n),
            )
            self._lanes[dest] = lane
            for i in range(n):
                name = f"connector-send-{dest}-{i}"
                lane.threads.append(start_thread(self._lane_loop, name, args=(lane,)))
        return lane

    def _notify(self, *, deliver_here: bool = False) -> None:
        """After a commit (or a delivery). If this thread's transactions queued outbox rows,
        hand them to their lanes from here: through the dispatcher, it cost a wake-up of that
        thread and a thread switch on the way of every pacs.009 and every decision. When the
        dispatcher runs batches, wake it: it looks for due rows, and queued legs and
        decisions. Unbatched, a commit that queued nothing leaves it asleep (deliveries report
        themselves: :meth:`_report`). Inside a lane's open batch, the rows are not committed
        yet: the batch's own call, after its commit, hands them out. ``deliver_here``: see
        :meth:`after_answers` (:meth:`_answers_first`)."""
        if getattr(self._local, "conn", None) is not None or getattr(
            self._local, "deferred", False
        ):
            return
        wrote: list[str] | None = getattr(self._local, "wrote", None)
        if wrote:
            self._local.wrote = []
            if self.cfg.batch_max <= 1 and self._threads and not self._stop.is_set():
                self._hand_out(wrote, deliver_here)
                return
            self._fresh = True
        elif self.cfg.batch_max <= 1:
            return
        self._wake.set()

    def _hand_out(self, msg_ids: list[str], deliver_here: bool = False) -> None:
        """Hand the outbox rows this thread's commits wrote (``msg_ids``) to their lanes, from
        this thread, once those commits are durable; with ``deliver_here``, a PvP's pair is
        delivered by this thread if their lanes are idle. Only this thread's rows: looking for
        every due row, the read had to wait for whatever other writer was between its COMMIT
        and its fsync (the rows it could see), a whole fsync more on the way of a pacs.009 or
        a decision about every other time under load. Theirs are handed out by them."""
        here: list[Any] = []
        try:
            self._dispatch_due(here if deliver_here else None, msg_ids=msg_ids)
        except Exception:  # the dispatcher's next round finds them
            log.exception("connector: handing out new outbox rows failed")
            self._fresh = True
            self._wake.set()
            return
        if here:
            self._deliver_here(here)

    def _deliver_here(self, rows: list[Any]) -> None:
        """Deliver rows on this thread, as a lane would (faults included), remote networks
        first (a post waits for the answer; a simulated bank's turn is CPU), and report to the
        dispatcher. What these deliveries queue in turn goes through the lanes."""
        outcomes: list[tuple[Any, str]] = []
        for row in sorted(rows, key=lambda r: r.destination_bic in self.sim.by_bic):
            lane = self._lanes[row.destination_bic]
            try:
                outcome = self._deliver(row, lane)
            except Exception:
                log.exception("delivery of outbox row %s failed", row.id)
                outcome = "retry"
            outcomes.append((row, outcome))
        self._report(outcomes)

    def _report(self, outcomes: list[tuple[Any, str]]) -> None:
        """Hand delivery outcomes to the dispatcher, which records them. It is woken only when
        it would not look soon by itself: for a row to hand out again (a retry, a held one), or
        while no recording is due (it then sleeps up to 0.2 s). A wake-up per delivery cost a
        thread switch and a round of the dispatcher for every message sent."""
        for done in outcomes:
            self._done.put(done)
        # While deliveries wait to be recorded, it sleeps at most _RECORD_WITHIN.
        recording_soon = bool(self._unrecorded)
        if not recording_soon or any(outcome != "sent" for _, outcome in outcomes):
            self._wake.set()

    def _dispatch_loop(self) -> None:
        linger = self.cfg.batch_linger_ms / 1000
        while not self._stop.is_set():
            idle = _RECORD_WITHIN if self._unrecorded else 0.2
            woken = self._wake.wait(timeout=linger if self._queued_left else idle)
            self._wake.clear()
            try:
                self._finish_delivered(force=not woken)
                made = 0
                if self.cfg.batch_max > 1:
                    self._stop.wait(linger)
                    self._finish_delivered()
                    made = self.flush_batches()
                # Cleared before the query, and only when seen set: a commit that set it
                # meanwhile is visible to the query, or sets it again for the next round.
                if self._fresh or made or not woken:
                    self._fresh = False
                    self._dispatch_due()
            except Exception:
                log.exception("connector dispatcher failed; retrying")
                self._stop.wait(0.2)
        try:
            self._finish_delivered(force=True)
        except Exception:  # sent again after a restart: receivers deduplicate
            log.exception("connector: recording the last deliveries failed")

    def _dispatch_due(
        self, keep: list[Any] | None = None, *, msg_ids: list[str] | None = None
    ) -> int:
        """Hand the due rows not in flight to their lanes; returns how many. A round that
        starts after a commit sees that commit's rows. With ``keep``, if there are at most two
        (a PvP's pair) and their lanes are idle, they are marked in flight and put in ``keep``
        instead, for the caller to deliver (a lane's thread woken for each would cost more CPU
        than the delivery).

        With ``msg_ids``, only those rows: the calling thread's, whose commits it saw made
        durable, so the read does not wait for other writers' fsyncs (``store.reader``'s
        ``own_rows``). A row whose savepoint was rolled back is not found; one not handed out
        for want of room is left to the dispatcher."""
        with self._flight:
            room = self._max_in_flight - len(self._inflight)
            if room <= 0:
                rows, more = [], bool(msg_ids)
            elif msg_ids is None:
                # (0, no row's id, keeps the IN list from being empty: fastsql's plan, not
                # SQLAlchemy's rendering of an empty set)
                params = {"now": now_ms(), "busy": [0, *self._inflight], "limit": room}
                with store.reader(self.engine) as conn:
                    rows = run(conn, store.SELECT_DUE_OUTBOX, params).all()
                more = len(rows) == room
            else:
                own = {"msg_ids": msg_ids, "now": now_ms()}
                with store.reader(self.engine, own_rows=True) as conn:
                    found = run(conn, store.SELECT_UNSENT_OUTBOX_BY_MSG_IDS, own).all()
                found = [row for row in found if row.id not in self._inflight]
                rows, more = found[:room], len(found) > room
            lanes = [self._lane(row.destination_bic) for row in rows]
            kept = keep is not None and len(rows) <= 2 and all(ln.queue.empty() for ln in lanes)
            for row, lane in zip(rows, lanes, strict=True):
                self._inflight.add(row.id)
                if not kept:
                    lane.queue.put(row)
        if more:  # more may be due once some are delivered
            self._fresh = True
            self._wake.set()
        if kept and keep is not None:
            keep.extend(rows)
        return len(rows)

    def _lane_loop(self, lane: _Lane) -> None:
        simulated = lane.dest in self.sim.by_bic
        while True:
            row = lane.queue.get()
            if row is None:
                return
            # A simulated bank's lane takes every row already queued into one transaction.
            rows, stop = take_queued(lane.queue, row, _SIM_BATCH if simulated else 1)
            if len(rows) == 1:
                try:
                    outcome = self._deliver(row, lane)
                except Exception:
                    log.exception("delivery of outbox row %s failed", row.id)
                    outcome = "retry"
                outcomes = [(row, outcome)]
            else:
                outcomes = self._deliver_batch(rows, lane)
            self._report(outcomes)
            self._notify()
            if stop:
                return

    def _deliver_batch(self, rows: list[Any], lane: _Lane) -> list[tuple[Any, str]]:
        """Deliver rows to a simulated bank in one transaction, each exactly as ``_deliver``
        would (faults included), each in a savepoint of it. If the transaction fails, none is
        delivered: all are handed out again."""
        after: list[Callable[[], None]] = []
        outcomes: list[tuple[Any, str]] = []
        try:
            with self.engine.begin() as conn:
                self._local.conn, self._local.after = conn, after
                try:
                    for row in rows:
                        try:
                            outcomes.append((row, self._deliver(row, lane)))
                        except Exception:
                            log.exception("delivery of outbox row %s failed", row.id)
                            outcomes.append((row, "retry"))
                finally:
                    self._local.conn = self._local.after = None
        except Exception:
            log.exception("a batch of %d deliveries failed; they are handed out again", len(rows))
            return [(row, "retry") for row in rows]
        for action in after:
            action()
        return outcomes

    def _finish_delivered(self, *, force: bool = False) -> None:
        """Take the lanes' outcomes; record deliveries (``sent_at``) once the oldest waiting
        is ``_RECORD_WITHIN`` old, or when ``force``d: at low rates one delivery at a time
        would each cost a transaction. Until recorded a row stays in flight, so it is not
        handed out again; lost in a crash, it is sent again (receivers deduplicate)."""
        done: list[tuple[Any, str]] = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        delivered = [row for row, outcome in done if outcome == "sent"]
        if delivered and not self._unrecorded:
            self._unrecorded_since = time.monotonic()
        self._unrecorded += delivered
        sent: list[Any] = []
        if self._unrecorded and (
            force
            or time.monotonic() - self._unrecorded_since >= _RECORD_WITHIN
            or len(self._unrecorded) >= _RECORD_MAX
        ):
            sent, self._unrecorded = self._unrecorded, []
            at = now_ms()
            with self.engine.begin() as conn:
                # The commit need not wait for an fsync either.
                conn.execution_options(**{NO_SYNC: True})
                run(
                    conn,
                    store.UPDATE_OUTBOX,
                    [{"k_id": r.id, "sent_at": at, "attempts": r.attempts + 1} for r in sent],
                )
        with self._flight:
            for row, outcome in done:
                if outcome == "retry":  # due again, now or after its backoff
                    self._inflight.discard(row.id)
                    self._fresh = True
            for row in sent:
                self._inflight.discard(row.id)
        for row in sent:
            step = "sent_pacs009" if row.msg_def_id == PACS009 else "sent_decision"
            if row.msg_def_id in (PACS009, "pacs.002.001.10", "camt.056.001.08"):
                crash_point(f"connector.{step}", self.settings.faults)
                self.faults.crash_after(step, row.pvp_id)
        with self._held_lock:
            held = self._held
            if held is not None and (
                any(r.id != held[0].id for r in delivered) or now_ms() - held[1] > 1000
            ):
                # Something was delivered after it (or nothing came for a second): send it now.
                self._held = None
                with self._flight:
                    self._inflight.discard(held[0].id)
                self._fresh = True

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
            run(
                conn,
                store.UPDATE_OUTBOX,
                {
                    "k_id": row.id,
                    "available_at": now_ms() + delay_ms,
                    "attempts": attempts,
                    "last_error": error[:500],
                },
            )

    def _transmit(self, row: Any, lane: _Lane) -> None:
        net = self._network(row.destination_bic)
        if net is None:
            raise RuntimeError(f"no network registered for {row.destination_bic}")
        if net.endpoint is None:
            with self._built_lock:
                built = self._built.pop(row.msg_id, None)
            self._deliver_simulated(row.payload, net.bic, built)
            return
        resp = lane.http.post(
            net.endpoint.rstrip("/") + "/iso20022/messages",
            row.payload,
            {"Content-Type": "application/xml"},
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
        header = header_for(admi, from_bic=self.bic, to_bic=to_bic or self.bic)
        return Inbound(400, build(admi, header, signer=self), xml=True)

    def receive_http(self, raw: bytes) -> Inbound:
        """``POST /iso20022/messages``: verify, store, acknowledge, process."""
        [inbound] = self.receive_batch([raw])
        return inbound

    def receive_batch(self, raws: list[bytes]) -> list[Inbound]:
        """Envelopes posted to ``/iso20022/messages`` at the same moment -> their answers.
        Under :meth:`handle_receptions`, what the commits queued is left for
        :meth:`after_answers`.

        Each is verified alone; those accepted are stored and processed in one transaction,
        each in a savepoint (one refused there spares the others). If the transaction fails,
        they are taken one at a time, as :meth:`_accept` does."""
        answers: list[Inbound | None] = [None] * len(raws)
        accepted: list[tuple[int, Message, str, str, bytes]] = []
        for i, raw in enumerate(raws):
            checked = self._check(raw)
            if isinstance(checked, Inbound):
                answers[i] = checked
            else:
                accepted.append((i, checked[0], checked[1], hashlib.sha256(raw).hexdigest(), raw))
        refused: list[tuple[int, MessageRejected, str]] = []
        after: list[Callable[[], None]] = []
        try:
            with self._tx() as conn:
                for i, msg, sender, sha, raw in accepted:
                    mine: list[Callable[[], None]] = []
                    try:
                        with savepoint(conn):
                            taken = self._take_inbound(conn, msg, sender, sha, raw, mine)
                    except MessageRejected as exc:
                        refused.append((i, exc, sender))
                        continue
                    after.extend(mine)
                    ack = {"msg_id": msg.id, "sha256": sha, "duplicate": not taken}
                    answers[i] = Inbound(202, ack)
        except Exception:
            log.exception("a batch of %d inbound messages failed; one at a time", len(accepted))
            refused = []
            after = []
            for i, msg, sender, sha, raw in accepted:
                try:
                    answers[i] = self._accept(msg, sender, sha, raw)
                except MessageRejected as exc:
                    refused.append((i, exc, sender))
        for i, rejection, sender in refused:
            log.warning("refused a message from %s: %r", sender, rejection)
            answers[i] = self._reject(rejection, sender)
        for action in after:
            action()
        if after or accepted:
            self._notify()
        return [a for a in answers if a is not None]

    @contextmanager
    def _answers_first(self) -> Iterator[None]:
        """On this thread, what commits queue meanwhile is not handed out (``_notify`` leaves
        it) but by :meth:`after_answers`, once the callers have their answers."""
        self._local.deferred = True
        try:
            yield
        finally:
            self._local.deferred = False

    def handle_receptions(self, raws: list[bytes]) -> list[Inbound]:
        """:meth:`receive_batch` on a reception thread
        (``gateway.messaging.queues.Batcher``): what it queued (a decision, typically) is
        delivered by :meth:`after_answers`."""
        with self._answers_first():
            return self.receive_batch(raws)

    def handle_requests(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Calls of the HTTP API that may queue outbox rows (trades, instructions), on a
        request thread (``gateway.messaging.queues.Batcher``): each call's result, or the
        exception it raised. What their commits queue is delivered by :meth:`after_answers`: a
        new PvP's pacs.009 then goes out from this thread, without waking a lane's thread for it
        (what the anyio pool these calls ran on before did, for every trade)."""
        outcomes: list[Any] = []
        with self._answers_first():
            for call in calls:
                try:
                    outcomes.append(call())
                except Exception as exc:  # this caller's answer; the others go on
                    outcomes.append(exc)
        return outcomes

    def after_answers(self, may_wait: bool) -> None:
        """On a reception thread (:meth:`handle_receptions`) or a request thread
        (:meth:`handle_requests`), after its answers went out: deliver what it queued (a
        decision, a new PvP's pacs.009) from this thread if the lanes are idle and
        ``may_wait`` (another thread of its kind stays free for what comes meanwhile, see
        Batcher), else through the lanes. Not before the answers: the sender of what was
        received may be the one it posts to, and a caller waits for its answer meanwhile."""
        self._notify(deliver_here=may_wait)

    def _check(self, raw: bytes) -> tuple[Message, str] | Inbound:
        """(message, sender) of an envelope that parses and verifies, else the refusal."""
        named: list[str] = []

        def pinned(bic: str) -> str | None:
            named.append(bic)
            return self._pinned(bic)

        try:
            # Verified against the pinned certificate of the sender its header names, on the
            # tree parse() builds anyway.
            parsed = parse(raw, settings=self.settings.iso20022, certificate_of=pinned)
            if parsed.header is None:
                raise MessageRejected("FF01", "an envelope (AppHdr + Document) is required")
            return parsed.message, parsed.header.from_bic
        except MessageRejected as exc:
            sender = named[0] if named else None
            log.warning("refused a message from %s: %r", sender, exc)
            return self._reject(exc, sender)

    def _pinned(self, bic: str) -> str | None:
        """The certificate pinned for a registered sender (None: not registered, or none)."""
        net = self._network(bic)
        return net.cert_pem if net is not None and net.cert_pem else None

    def _deliver_simulated(self, raw: bytes, bic: str, built: Message | None = None) -> None:
        """The simulated bank handles the message and the connector processes its answers in
        one transaction: all of it happens, or none (and the row is delivered again). Both
        ways messages go typed with their envelopes (``built``: the message ``raw`` was built
        from): in process, and checked against the schema when they were built, so they are
        not parsed back."""
        batch_after = getattr(self._local, "after", None)
        after: list[Callable[[], None]] = []
        with self._tx() as conn:
            self._simulated_turn(conn, raw, bic, built, after)
        if batch_after is not None:  # inside a batch: once the batch has committed
            batch_after.extend(after)
            return
        for action in after:
            action()
        self._notify()

    def _simulated_turn(
        self,
        conn: Connection,
        raw: bytes,
        bic: str,
        built: Message | None,
        after: list[Callable[[], None]],
    ) -> None:
        """In ``conn``'s transaction: the simulated bank ``bic`` handles ``raw`` (``built``:
        the message it was built from, if at hand) and the connector takes its answers."""
        for message, answer in self.sim.handle(raw, bic, conn=conn, message=built):
            sha = hashlib.sha256(answer).hexdigest()
            self._take_inbound(conn, message, bic, sha, answer, after)

    def _accept(self, msg: Message, sender: str, sha: str, raw: bytes) -> Inbound:
        """Store one message and process it in one transaction (one commit before the 202);
        if processing fails, store it alone: the sweeper processes it later."""
        ack = {"msg_id": msg.id, "sha256": sha, "duplicate": False}
        after: list[Callable[[], None]] = []
        try:
            with self._tx() as conn:
                if not self._take_inbound(conn, msg, sender, sha, raw, after):
                    return Inbound(202, {**ack, "duplicate": True})
        except MessageRejected:
            raise
        except Exception:
            log.exception("processing inbound %s %s failed; stored for a retry", msg.id, sender)
            with self._tx() as conn:
                if self._seen_inbound(conn, msg, sender, sha):
                    return Inbound(202, {**ack, "duplicate": True})
                self._store_inbound(conn, msg, sender, sha, raw, processed=False)
            return Inbound(202, ack)
        for action in after:
            action()
        return Inbound(202, ack)

    def _take_inbound(
        self,
        conn: Connection,
        msg: Message,
        sender: str,
        sha: str,
        raw: bytes,
        after: list[Callable[[], None]],
    ) -> bool:
        """Process a message and store it, processed, in the caller's transaction; False
        (nothing done) for the same bytes again, DU01 for other bytes under its id. Its bytes
        go in the inbox row only if no PvP's log has them (see ``store.inbox``)."""
        if self._seen_inbound(conn, msg, sender, sha):
            return False
        logged = self._process(conn, msg, sender, raw, after)
        self._store_inbound(conn, msg, sender, sha, b"" if logged else raw, processed=True)
        return True

    def _seen_inbound(self, conn: Connection, msg: Message, sender: str, sha: str) -> bool:
        """Whether the message was received before (same bytes); DU01 for other bytes."""
        old = run(
            conn,
            store.SELECT_INBOX_SHA,
            {"sender_bic": sender, "msg_def_id": msg.MESSAGE_ID, "msg_id": msg.id},
        ).first()
        if old is not None and old.sha256 != sha:
            raise MessageRejected(
                "DU01", "message id already received with other content", msg_id=msg.id
            )
        return old is not None

    def _store_inbound(
        self, conn: Connection, msg: Message, sender: str, sha: str, raw: bytes, *, processed: bool
    ) -> None:
        run(
            conn,
            store.INSERT_INBOX,
            {
                "sender_bic": sender,
                "msg_def_id": msg.MESSAGE_ID,
                "msg_id": msg.id,
                "sha256": sha,
                "raw": raw,
                "received_at": now_ms(),
                "processed": processed,
            },
        )

    def process_pending_inbox(self, older_than_ms: int) -> None:
        cutoff = now_ms() - older_than_ms
        with store.reader(self.engine) as conn:
            rows = run(conn, store.SELECT_PENDING_INBOX, {"cutoff": cutoff}).all()
        self._process_inbox_rows(rows)

    def _process_inbox_rows(self, rows: Sequence[Any]) -> None:
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
                done = run(conn, store.SELECT_INBOX_PROCESSED, {"id": inbox_id}).scalar_one()
                if not done and parsed is not None:
                    self._process(conn, parsed.message, sender, raw, after)
                run(conn, store.MARK_INBOX_PROCESSED, {"k_id": inbox_id})
        except Exception:
            log.exception("processing inbound message %s failed; will retry", inbox_id)
            return
        for action in after:
            action()
        self._notify()

    def _leg_by_uetr(self, conn: Connection, uetr: str) -> _Found | None:
        """The leg of ``uetr`` with its PvP and decision, in one row (see the statement)."""
        if conn.dialect.name != "sqlite":
            # Lock the PvP first, then read (at once, or another transaction's change could be
            # missed); SQLite's writer lock already serialises every writing transaction.
            run(conn, store.LOCK_PVP_OF_UETR, {"uetr": uetr}).all()
        row = run(conn, store.SELECT_LEG_BY_UETR, {"uetr": uetr}).first()
        if row is None:
            return None
        decision = None if row.decision is None else _Decision(row.decision, row.decision_reason)
        return _Found(row, row, decision)

    def _decision(self, conn: Connection, pvp_id: str) -> Any:
        return run(conn, store.SELECT_DECISION, {"pvp_id": pvp_id}).first()

    def _process(
        self,
        conn: Connection,
        msg: Message,
        sender: str,
        raw: bytes,
        after: list[Callable[[], None]],
    ) -> bool:
        """Apply an inbound message in ``conn``'s transaction; whether it concerned a PvP
        (then its bytes are in that PvP's message log)."""
        touched: list[str] = []
        if isinstance(msg, Pacs002):
            for st in msg.transactions:
                found = self._leg_by_uetr(conn, st.original.uetr)
                if found is None:
                    log.warning("pacs.002 for unknown UETR %s from %s", st.original.uetr, sender)
                    continue
                touched.append(found.pvp.id)
                self._on_status(conn, found, st, after)
        elif isinstance(msg, Camt029):
            for res in msg.transactions:
                found = self._leg_by_uetr(conn, res.original.uetr)
                if found is None:
                    continue
                pvp, leg = found.pvp, found.leg
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
            row = run(conn, store.SELECT_OUTBOX_PVP_BY_MSG_ID, {"msg_id": msg.related_ref}).first()
            if row is not None and row.pvp_id:
                touched.append(row.pvp_id)
        else:
            log.warning("%s sent %s: not expected by the connector", sender, msg.MESSAGE_ID)
        if touched:
            self._log(conn, touched, "in", sender, msg.MESSAGE_ID, msg.id, raw)
        return bool(touched)

    def _update_leg(self, conn: Connection, leg: Any, **values: Any) -> None:
        run(conn, store.UPDATE_LEG, {"k_pvp": leg.pvp_id, "k_leg": leg.leg, **values})

    def _on_status(
        self,
        conn: Connection,
        found: _Found,
        st: TransactionStatus,
        after: list[Callable[[], None]],
    ) -> None:
        pvp, leg, decision = found
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
                run(conn, store.UPDATE_PVP, {"k_id": pvp.id, "state": "aborted"})
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
        rows = run(conn, store.SELECT_LEGS_OF, {"pvp_id": pvp.id}).all()
        if all(r.status == "locked" for r in rows) and now_ms() < pvp.deadline - self.margin:
            self._decide(conn, pvp, "COMMIT", None, "both legs locked in time", after, rows)

    def _decide(
        self,
        conn: Connection,
        pvp: Any,
        decision: str,
        reason: str | None,
        detail: str,
        after: list[Callable[[], None]],
        leg_rows: Sequence[Any] | None = None,
    ) -> None:
        """Record THE decision and queue its delivery to every leg, in the caller's tx
        (``leg_rows``: the PvP's legs if the caller just read them in it)."""
        if self._decision(conn, pvp.id) is not None:
            return
        run(
            conn,
            store.INSERT_DECISION,
            {
                "pvp_id": pvp.id,
                "decision": decision,
                "reason": reason,
                "detail": detail[:300],
                "decided_at": now_ms(),
            },
        )
        state = "committed" if decision == "COMMIT" else "aborted"
        run(conn, store.UPDATE_PVP, {"k_id": pvp.id, "state": state})
        if leg_rows is None:
            leg_rows = run(conn, store.SELECT_LEGS_OF, {"pvp_id": pvp.id}).all()
        self._send_decisions(conn, pvp, leg_rows, decision, reason)
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

    def _redeliver_at(self, leg: Any, since: int | None = None) -> int:
        """Exponential backoff of re-sending a decision, from ``since`` (ms; default now): it
        does not pile up under backlog."""
        wait = self.cfg.redeliver_after_ms * 2 ** min(int(leg.redeliveries or 0), 16)
        return (now_ms() if since is None else since) + int(min(self.cfg.redeliver_cap_ms, wait))

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
        self._send_decisions(conn, pvp, [leg], decision, reason)

    def _send_decisions(
        self, conn: Connection, pvp: Any, leg_rows: Sequence[Any], decision: str, reason: str | None
    ) -> None:
        """The decision to each of ``leg_rows``: one statement per table for them all."""
        batched = self.cfg.batch_max > 1
        updates: list[dict[str, Any]] = []
        outgoing: list[_Outgoing] = []
        for leg in leg_rows:
            update = {
                "k_pvp": leg.pvp_id,
                "k_leg": leg.leg,
                "decision_sent_at": now_ms(),
                "redeliver_at": self._redeliver_at(leg),
            }
            if batched:
                # Grouped with other decisions to the same network by flush_batches.
                update["decision_queued"] = True
            else:
                msg = self._decision_message(leg.network_bic, decision, [(pvp, leg, reason)])
                outgoing.append(self._outgoing([pvp.id], leg.network_bic, msg))
            updates.append(update)
        self._write_outgoing(conn, outgoing)
        if updates:
            run(conn, store.UPDATE_LEG, updates)

    def _maybe_complete(self, conn: Connection, pvp_id: str) -> None:
        run(conn, store.COMPLETE_PVP, {"k_id": pvp_id})

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
            pvp, leg, decision = found
            touched.append(pvp.id)
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
        due = {"due": now + self.margin, "limit": 500}
        stale_at = {"now": now, "limit": 500}
        cutoff = {"cutoff": now - 2000}
        overdue: list[str] = []
        stale: Sequence[Any] = ()
        pending: Sequence[Any] = ()
        with store.reader(self.engine) as conn:
            # Every 100 ms or so, and mostly there is nothing: one probe first.
            probe = run(conn, store.SWEEP_PROBE, {**due, **stale_at, **cutoff}).one()
            if probe.overdue:
                overdue = [r.id for r in run(conn, store.SELECT_OVERDUE, due)]
            if probe.stale:
                stale = run(conn, store.SELECT_STALE_LEGS, stale_at).all()
            if probe.inbox:
                pending = run(conn, store.SELECT_PENDING_INBOX, cutoff).all()
        for pvp_id in overdue:
            self.abort_if_overdue(pvp_id)
        if stale:
            with self._tx() as conn:  # one transaction for the lot
                for pvp_id, leg_name in stale:
                    self._redeliver_in(conn, pvp_id, leg_name)
            self._notify()
        self._process_inbox_rows(pending)
        held = self._held
        if held is not None and now_ms() - held[1] > 1000:
            self._notify()

    def abort_if_overdue(self, pvp_id: str) -> None:
        after: list[Callable[[], None]] = []
        with self._tx() as conn:
            q = store.SELECT_PVP if conn.dialect.name == "sqlite" else store.SELECT_PVP_FOR_UPDATE
            pvp = run(conn, q, {"pvp_id": pvp_id}).one()
            if pvp.state != "pending" or now_ms() < pvp.deadline - self.margin:
                return
            self._decide(conn, pvp, "ABORT", "TMOT", "deadline - margin passed", after)
        for action in after:
            action()
        self._notify()

    def _redeliver(self, pvp_id: str, leg_name: str) -> None:
        with self._tx() as conn:
            self._redeliver_in(conn, pvp_id, leg_name)
        self._notify()

    def _redeliver_in(self, conn: Connection, pvp_id: str, leg_name: str) -> None:
        pvp = run(conn, store.SELECT_PVP, {"pvp_id": pvp_id}).one()
        leg_key = {"pvp_id": pvp_id, "leg": leg_name}
        leg = run(conn, store.SELECT_LEG, leg_key).one()
        delivery = run(
            conn, store.DELIVERY_STATE, {"pvp_id": pvp_id, "destination_bic": leg.network_bic}
        ).one()
        decision = self._decision(conn, pvp_id)
        if leg.acknowledged or decision is None:
            return
        if delivery.unsent or leg.decision_queued:
            # Not even sent yet (a backlog): wait another period, no new message.
            self._update_leg(
                conn, leg, decision_sent_at=now_ms(), redeliver_at=self._redeliver_at(leg)
            )
            return
        delivered = delivery.last_sent_at
        if delivered is not None and now_ms() < delivered + self.cfg.redeliver_after_ms:
            # Delivered (202: stored by the receiver) less than a period ago: its answer may
            # still be queued behind a backlog over there. Re-sending now only adds to that
            # backlog (every copy is answered again): count the period from the delivery.
            self._update_leg(conn, leg, redeliver_at=self._redeliver_at(leg, since=delivered))
            return
        log.info("PvP %s: re-sending %s to %s", pvp_id, decision.decision, leg.network_bic)
        self._update_leg(conn, leg, redeliveries=leg.redeliveries + 1)
        leg = run(conn, store.SELECT_LEG, leg_key).one()
        self._send_decision(conn, pvp, leg, decision.decision, decision.reason)

    # --- queries ----------------------------------------------------------------------------

    def pvp_view(self, pvp_id: str) -> dict[str, Any]:
        with store.reader(self.engine) as conn:
            rows = run(conn, store.SELECT_PVP_VIEW, {"pvp_id": pvp_id}).all()
        if not rows:
            raise NotFound(f"no PvP {pvp_id}")
        first = rows[0]
        decision = (
            None
            if first.decision is None
            else {
                "decision": first.decision,
                "reason": first.decision_reason,
                "detail": first.decision_detail,
                "decided_at": first.decided_at,
            }
        )
        leg_rows = [
            {name: r._mapping["leg_" + name] for name in _LEG_VIEW_FIELDS}
            for r in rows
            if r.leg_leg is not None
        ]
        return _pvp_view(first._mapping, decision, leg_rows)

    def pvp_messages(self, pvp_id: str) -> list[dict[str, Any]]:
        with store.reader(self.engine) as conn:
            if run(conn, store.SELECT_PVP_ID, {"pvp_id": pvp_id}).first() is None:
                raise NotFound(f"no PvP {pvp_id}")
            rows = run(conn, store.SELECT_MESSAGES_OF, {"pvp_id": pvp_id}).all()
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
