"""The unit of work and the outbox: what a transaction writes to send, and what it leaves
for its caller to do once it has committed.

A :class:`Work` is one write transaction (or, inside a lane's batch of deliveries, a savepoint
of the batch's transaction) together with what it produced: the message ids of the outbox rows
it wrote, to hand to the lanes once committed, and the fault steps it reached, to fire then
(as cosmicpython's unit of work collects the events its handlers raise). Nothing is handed out
from inside a transaction.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection, Engine

from gateway.connector import pgtx, store
from gateway.connector.messages import PvPRef, credit_transfer
from gateway.connector.registry import Registry
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms
from gateway.iso20022 import KeyPair, Message, build, header_for
from gateway.sqlite.fastsql import run

KEEP_BUILT = 100_000
"""The built messages an :class:`Outbox` keeps, by default."""


class Step(NamedTuple):
    """A fault step reached (``gateway.connector.faults.CRASH_STEPS``), fired after the
    commit: a crash injected there finds the transaction's work durable."""

    name: str
    pvp_id: str | None


@dataclass(slots=True)
class Work:
    """One write transaction and what it produced for after its commit."""

    conn: Connection
    sent: list[str] = field(default_factory=list)
    """Message ids of the outbox rows written, not answered in the transaction."""
    steps: list[Step] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)
    """Message log entries, in causal order, written just before the commit: an inbound
    message is placed before what processing it produced (:meth:`Handlers.process`), which
    is written before the message itself is known to concern a PvP."""


@contextmanager
def transaction(engine: Engine, within: Work | None = None) -> Iterator[Work]:
    """A write transaction; ``within`` another's (a lane's batch), a savepoint of it that
    records what it produced there."""
    if within is not None:
        reached, logged_before = len(within.steps), len(within.log)
        try:
            with pgtx.savepoint(within.conn):
                yield within
        except BaseException:
            del within.steps[reached:]  # rolled back: those steps were not reached after all
            del within.log[logged_before:]  # nor those messages stored
            raise
        return
    with engine.begin() as conn:
        work = Work(conn)
        yield work
        write_log(conn, work.log)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An outbox row as delivery reads it (``store.SELECT_DUE_OUTBOX``,
    ``SELECT_UNSENT_OUTBOX_BY_MSG_IDS``)."""

    id: int
    destination_bic: str
    msg_def_id: str
    msg_id: str
    pvp_id: str | None
    payload: bytes
    attempts: int


def outbox_row(r: Any) -> OutboxRow:
    return OutboxRow(
        r.id, r.destination_bic, r.msg_def_id, r.msg_id, r.pvp_id, r.payload, r.attempts
    )


@dataclass(frozen=True, slots=True)
class Logged:
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
class Outgoing:
    """A message to send, not yet written: its outbox row and its message log entry; to a
    simulated bank, also the message itself (``payload`` was built from it)."""

    outbox: dict[str, Any]
    log: Logged
    message: Message | None = None


def logged(
    pvp_ids: list[str],
    direction: str,
    peer: str,
    name: str,
    msg_id: str,
    raw: bytes,
    at: int | None = None,
) -> Logged:
    sha = hashlib.sha256(raw).hexdigest()
    pvps = tuple(dict.fromkeys(pvp_ids))
    return Logged(pvps, direction, peer, name, msg_id, raw, sha, now_ms() if at is None else at)


def write_log(conn: Connection, entries: list[Logged]) -> None:
    """One log row per PvP a message concerns. The bytes of a message about several PvPs
    (a batch) go once into ``message_bodies``: stored per PvP, a batch of 100 was written
    100 times (1.6 GB of connector database for a 3000-PvP batched benchmark). In a
    PostgreSQL write transaction, held back and sent as one statement with the transaction's
    last writes (:mod:`gateway.connector.pgwrites`)."""
    writes = pgtx.writes_of(conn)
    if writes is not None:
        writes.add_log(entries)
        return
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
            rows.extend({**base, "pvp_id": p, "raw": b"", "body_id": body_id} for p in e.pvp_ids)
    if rows:
        run(conn, store.INSERT_MESSAGE, rows)


class Outbox:
    """Builds the connector's messages into outbox rows (signed for a remote network) and
    keeps, for a simulated bank, the typed message until it is delivered: the bank takes it
    typed instead of parsing back bytes built (and validated) from it. Bounded by
    :attr:`keep_built`; a message not found here (a restart, a redelivery) is parsed from its
    row."""

    def __init__(
        self,
        bic: str,
        registry: Registry,
        sim: SimulatedNetworks,
        signer: KeyPair,
        *,
        keep_built: int = KEEP_BUILT,
    ) -> None:
        self.bic = bic
        self.registry = registry
        self.sim = sim
        self.signer = signer
        self.keep_built = keep_built
        """How many built messages to a simulated bank are kept for their delivery after the
        commit, the oldest let go first; 0: none, each is parsed from its row when delivered
        (as after a restart). One answered in its sender's transaction is at hand there."""
        self._built: OrderedDict[str, Message] = OrderedDict()
        self._built_lock = threading.Lock()

    def outgoing(self, pvp_ids: list[str], dest: str, msg: Message) -> Outgoing:
        """``msg`` to ``dest`` as an outbox row and its message log rows, not yet written."""
        net = self.registry.network(dest)
        signer = self.signer if net is not None and net.endpoint else None
        raw = build(msg, header_for(msg, from_bic=self.bic, to_bic=dest), signer=signer)
        simulated = net is not None and net.endpoint is None and dest in self.sim.by_bic
        if simulated and self.keep_built > 0:
            with self._built_lock:
                self._built[msg.id] = msg
                while len(self._built) > self.keep_built:
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
        entry = logged(pvp_ids, "out", dest, msg.MESSAGE_ID, msg.id, raw)
        return Outgoing(row, entry, msg if simulated else None)

    def take_built(self, msg_id: str) -> Message | None:
        """The typed message of ``msg_id`` if still at hand (once: it is being delivered)."""
        with self._built_lock:
            return self._built.pop(msg_id, None)


__all__ = [
    "KEEP_BUILT",
    "Logged",
    "Outbox",
    "OutboxRow",
    "Outgoing",
    "PvPRef",
    "Step",
    "Work",
    "credit_transfer",
    "logged",
    "outbox_row",
    "transaction",
    "write_log",
]
