"""An in-memory connector repository, for running the connector's handlers without I/O.

:class:`FakeRepository` is :class:`gateway.connector.repository.Repository` on dicts, with the
properties of the SQL store that the handlers rely on:

- constraints: one decision per PvP, never changed (the ``decisions`` triggers); updates only
  of legs and PvPs that exist, and only of their columns; one inbox row per (sender, message
  type, message id);
- completion as ``COMPLETE_PVP`` does it: committed -> settled, aborted -> cancelled once every
  leg is acknowledged;
- batched mode's queues in the statements' order: queued legs of pending PvPs by the PvP's
  creation, decisions waiting to be sent by decision time (then PvP and leg).

:class:`World` wires real handlers (real outbox: messages are built and checked against their
schemas) to it, with both networks simulated banks reached through their lanes (never answered
in the sender's transaction), so what the handlers send stays in the outbox rows for the test
to read. Nothing reaches a database: the engine and the connection the handlers are given are
``None``, and any use of them fails.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.engine import Connection, Engine

from gateway.config import Settings, load_settings
from gateway.connector.faults import Faults
from gateway.connector.handlers import Handlers
from gateway.connector.keys import generate_identity
from gateway.connector.messages import original
from gateway.connector.model import Decision, LegStatus, PvPState
from gateway.connector.outbox import Logged, Outbox, Work
from gateway.connector.registry import Registry
from gateway.connector.repository import DeliveryState, InboxKey
from gateway.connector.rows import Found, LegRow, PvPRow, QueuedDecision, QueuedLeg
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms
from gateway.iso20022 import Message, Pacs002, Pacs028, StatusRequest, TransactionStatus
from gateway.iso20022.models import TxStatus

CONNECTOR_BIC = "SWHQBEBBXXX"
DT_NETWORK = "DTNBKZKA"
FX_NETWORK = "CBAUAEAA"
MARGIN_MS = 60_000
"""``deadline - margin``: a minute, so that no test depends on how fast it runs."""

_NO_ENGINE = cast(Engine, None)
_NO_CONNECTION = cast(Connection, None)
_LEG_COLUMNS = frozenset(f.name for f in fields(LegRow))


class ConstraintViolation(Exception):
    """What the database would raise as an IntegrityError."""


@dataclass
class FakeRepository:
    """The connector's tables the handlers use, in memory."""

    pvps: dict[str, PvPRow] = field(default_factory=dict)
    created_at: dict[str, int] = field(default_factory=dict)
    legs: dict[tuple[str, str], LegRow] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    inbox: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    # --- reads ---

    def expect(self, work: Work, uetrs: Sequence[str], received: InboxKey | None = None) -> None:
        pass

    def find_leg(self, work: Work, uetr: str) -> Found | None:
        for leg in self.legs.values():
            if leg.uetr == uetr:
                return Found(self.pvps[leg.pvp_id], leg, self.decisions.get(leg.pvp_id))
        return None

    def read_pvp(self, work: Work, pvp_id: str, *, for_update: bool = False) -> PvPRow:
        return self.pvps[pvp_id]

    def read_legs(self, work: Work, pvp_id: str) -> list[LegRow]:
        return sorted((leg for leg in self.legs.values() if leg.pvp_id == pvp_id), key=_name)

    def read_leg(self, work: Work, pvp_id: str, leg: str) -> LegRow:
        return self.legs[pvp_id, leg]

    def read_decision(self, work: Work, pvp_id: str) -> Decision | None:
        return self.decisions.get(pvp_id)

    def delivery_state(self, work: Work, pvp_id: str, destination_bic: str) -> DeliveryState:
        rows = [
            r
            for r in self.outbox
            if r["pvp_id"] == pvp_id and r["destination_bic"] == destination_bic
        ]
        sent = [r["sent_at"] for r in rows if r["sent_at"] is not None]
        return DeliveryState(len(rows) - len(sent), max(sent, default=None))

    def pvp_of_message(self, work: Work, msg_id: str) -> str | None:
        return next((r["pvp_id"] for r in self.outbox if r["msg_id"] == msg_id), None)

    def inbox_sha(self, work: Work, sender_bic: str, msg_def_id: str, msg_id: str) -> str | None:
        row = self.inbox.get((sender_bic, msg_def_id, msg_id))
        return None if row is None else str(row["sha256"])

    def queued_legs(self, work: Work, limit: int) -> list[QueuedLeg]:
        queued = [
            QueuedLeg(leg, self.pvps[leg.pvp_id], self.created_at[leg.pvp_id])
            for leg in self.legs.values()
            if leg.status is LegStatus.QUEUED and self.pvps[leg.pvp_id].state is PvPState.PENDING
        ]
        queued.sort(key=lambda q: (q.created_at, q.leg.pvp_id, q.leg.leg))
        return queued[:limit]

    def queued_decisions(self, work: Work, limit: int) -> list[QueuedDecision]:
        queued = []
        for leg in self.legs.values():
            decision = self.decisions.get(leg.pvp_id)
            if leg.decision_queued and decision is not None:
                pvp = self.pvps[leg.pvp_id]
                queued.append((decision, QueuedDecision(leg, pvp, decision.kind, decision.reason)))
        queued.sort(key=lambda dq: (dq[0].decided_at, dq[1].leg.pvp_id, dq[1].leg.leg))
        return [q for _, q in queued[:limit]]

    # --- writes ---

    def insert_pvps(
        self, work: Work, pvps: Sequence[tuple[PvPRow, int]], legs: Sequence[LegRow]
    ) -> None:
        for pvp, created_at in pvps:
            if pvp.id in self.pvps:
                raise ConstraintViolation(f"PvP {pvp.id} exists")
            self.pvps[pvp.id] = pvp
            self.created_at[pvp.id] = created_at
        for leg in legs:
            self.legs[leg.pvp_id, leg.leg] = leg

    def update_leg(self, work: Work, leg: LegRow, **values: Any) -> None:
        self.update_legs(work, [{"k_pvp": leg.pvp_id, "k_leg": leg.leg, **values}])

    def update_legs(self, work: Work, updates: list[dict[str, Any]]) -> None:
        for update in updates:
            values = dict(update)
            key = (values.pop("k_pvp"), values.pop("k_leg"))
            if key not in self.legs:
                raise ConstraintViolation(f"update of a missing leg {key}")
            if not values.keys() <= _LEG_COLUMNS:
                raise ConstraintViolation(
                    f"no such columns of legs: {values.keys() - _LEG_COLUMNS}"
                )
            if "status" in values:
                values["status"] = LegStatus(values["status"])
            self.legs[key] = replace(self.legs[key], **values)

    def update_pvp(self, work: Work, pvp_id: str, state: PvPState) -> None:
        self.pvps[pvp_id] = replace(self.pvps[pvp_id], state=PvPState(state))

    def complete(self, work: Work, pvp_id: str) -> None:
        pvp = self.pvps[pvp_id]
        legs = self.read_legs(work, pvp_id)
        self.pvps[pvp_id] = replace(
            pvp, state=pvp.as_pvp().complete([r.as_leg() for r in legs]).state
        )

    def insert_decision(self, work: Work, decision: Decision) -> None:
        if decision.pvp_id in self.decisions:
            raise ConstraintViolation(f"PvP {decision.pvp_id} is decided already")
        self.decisions[decision.pvp_id] = decision

    def insert_outbox(self, work: Work, rows: list[dict[str, Any]]) -> None:
        self.outbox.extend(dict(r) for r in rows)

    def insert_inbox(self, work: Work, row: dict[str, Any]) -> None:
        key = (row["sender_bic"], row["msg_def_id"], row["msg_id"])
        if key in self.inbox:
            raise ConstraintViolation(f"inbox row {key} exists")
        self.inbox[key] = dict(row)


def _name(leg: LegRow) -> str:
    return leg.leg


def settings(**connector: Any) -> Settings:
    values = {
        "bic": CONNECTOR_BIC,
        "safety_margin_ms": MARGIN_MS,
        "sim_inline": False,
        "simulated_currencies": {"KZT": DT_NETWORK, "AED": FX_NETWORK},
        **connector,
    }
    return load_settings(environ={}, connector=values)


@dataclass
class World:
    """The connector's handlers on a :class:`FakeRepository`; ``log``: the message log of the
    units of work committed (:meth:`commit`)."""

    repo: FakeRepository
    handlers: Handlers
    outbox: Outbox
    log: list[Logged] = field(default_factory=list)
    _messages: dict[str, Message] = field(default_factory=dict)

    @classmethod
    def make(cls, **connector: Any) -> World:
        cfg = settings(**connector)
        faults = Faults()
        sim = SimulatedNetworks(
            _NO_ENGINE,
            dict(cfg.connector.simulated_currencies),
            connector_bic=CONNECTOR_BIC,
            faults=faults,
        )
        registry = Registry(cfg.connector, _NO_ENGINE, sim)
        outbox = Outbox(CONNECTOR_BIC, registry, sim, _Identity.make())
        repo = FakeRepository()
        return cls(repo, Handlers(cfg, outbox, sim, faults, repo), outbox)

    def work(self) -> Work:
        return Work(_NO_CONNECTION)

    def commit(self, work: Work) -> None:
        self.log.extend(work.log)

    # --- a PvP and what its networks say ---

    def pvp(self, *, deadline_in_ms: int, status: LegStatus = LegStatus.INSTRUCTED) -> PvPRow:
        """A PvP whose pacs.009 went to both networks (legs ``DT`` and ``FX``); ``status``
        QUEUED: batched mode's, whose pacs.009 waits for a batch. Each is made after the one
        before (a later ``created_at``), so that the order of creation is theirs."""
        n = len(self.repo.pvps) + 1
        secret = secrets.token_hex(32)
        pvp = PvPRow(
            id=f"PVP{n:04d}",
            deadline=now_ms() + deadline_in_ms,
            condition=hashlib.sha256(bytes.fromhex(secret)).hexdigest(),
            secret=secret,
            state=PvPState.PENDING,
        )
        self.repo.pvps[pvp.id] = pvp
        self.repo.created_at[pvp.id] = max([now_ms(), *self.repo.created_at.values()]) + 1
        for name, network, currency in (("DT", DT_NETWORK, "KZT"), ("FX", FX_NETWORK, "AED")):
            self.repo.legs[pvp.id, name] = LegRow(
                pvp_id=pvp.id,
                leg=name,
                uetr=str(uuid.uuid4()),
                network_bic=network,
                currency=currency,
                amount=1000,
                debtor_bic="HSBKKZKX" if name == "DT" else "EBILAEAD",
                debtor_account=f"{name}-payer",
                creditor_bic="EBILAEAD" if name == "DT" else "HSBKKZKX",
                creditor_account=f"{name}-payee",
                end_to_end_id=f"E2E-{pvp.id}-{name}",
                pacs009_msg_id=f"M-{pvp.id}-{name}",
                status=status,
                reason=None,
                locked_at=None,
                acknowledged=False,
                decision_sent_at=None,
                decision_queued=False,
                redeliver_at=None,
                redeliveries=0,
            )
        return pvp

    def leg(self, pvp: PvPRow, name: str) -> LegRow:
        return self.repo.legs[pvp.id, name]

    def status(self, leg: LegRow, status: TxStatus, reason: str | None = None) -> Pacs002:
        """The pacs.002 a leg's network sends about it."""
        st = TransactionStatus(original=original(leg), status=status, reason=reason)
        return Pacs002(msg_id=_new_msg_id(), created=datetime.now(UTC), transactions=(st,))

    def status_request(self, leg: LegRow) -> Pacs028:
        req = StatusRequest(original=original(leg))
        return Pacs028(msg_id=_new_msg_id(), created=datetime.now(UTC), transactions=(req,))

    def receive(self, msg: Message, sender: str) -> bool:
        """``msg`` from ``sender`` taken in one unit of work, committed: whether it was new."""
        work = self.work()
        raw = msg.id.encode()  # its bytes only identify it here (deduplication, the log)
        taken = self.handlers.take(work, msg, sender, hashlib.sha256(raw).hexdigest(), raw)
        self.commit(work)
        return taken

    def sent(self, *, msg_def_id: str | None = None) -> list[dict[str, Any]]:
        """The outbox rows written, oldest first (of one message type if given)."""
        return [
            r
            for r in self.repo.outbox
            if msg_def_id is None or r["msg_def_id"].startswith(msg_def_id)
        ]

    def message(self, row: dict[str, Any]) -> Message:
        """The typed message an outbox row was built from."""
        msg_id = row["msg_id"]
        if msg_id not in self._messages:
            built = self.outbox.take_built(msg_id)
            assert built is not None
            self._messages[msg_id] = built
        return self._messages[msg_id]


_ids = iter(range(1, 1_000_000))


def _new_msg_id() -> str:
    return f"NET{next(_ids):08d}"


@dataclass(frozen=True)
class _Identity:
    key_pem: str
    cert_pem: str

    @classmethod
    def make(cls) -> _Identity:
        return cls(*generate_identity(f"connector {CONNECTOR_BIC}"))


__all__ = [
    "CONNECTOR_BIC",
    "DT_NETWORK",
    "FX_NETWORK",
    "MARGIN_MS",
    "ConstraintViolation",
    "FakeRepository",
    "World",
    "settings",
]
