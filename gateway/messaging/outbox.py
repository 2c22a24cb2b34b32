"""The transactional outbox: messages and webhooks written in the same transaction as the
state change that causes them, and delivered afterwards, at least once, with backoff.

A row is claimed by a dispatcher with a lease (``locked_until``): on PostgreSQL several
replicas poll with ``FOR UPDATE SKIP LOCKED``, and a dispatcher that dies mid-delivery loses
its lease, so the row is retried. Receivers deduplicate by ``event_id``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel

from gateway.db import (
    SqlUnitOfWork,
    autoincrement_field,
    partial_index,
    pipeline_of,
    table_of,
    utc_field,
    utcnow,
)
from gateway.sqlite.fastsql import run
from gateway.sqlite.walsync import NO_SYNC

log = logging.getLogger(__name__)


class OutboxRow(SQLModel, table=True):
    __tablename__ = "outbox"
    # What waits to be sent, in order.
    __table_args__ = (partial_index("ix_outbox_unsent", "id", where="sent_at IS NULL"),)
    id: int | None = autoincrement_field()
    event_id: str = Field(max_length=64, unique=True)
    topic: str = Field(max_length=64)
    destination: str = Field(default="", max_length=500)
    payload: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    headers: str = Field(default="{}")
    created_at: datetime = utc_field()
    available_at: datetime = utc_field()
    locked_until: datetime | None = utc_field(nullable=True)
    attempts: int = 0
    sent_at: datetime | None = utc_field(nullable=True)
    last_error: str | None = Field(default=None, max_length=1000)


outbox_t = table_of(OutboxRow)
_INSERT_OUTBOX = outbox_t.insert()
_INSERT_CLAIMED = outbox_t.insert().returning(outbox_t.c.id)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    event_id: str
    topic: str
    destination: str
    payload: bytes
    headers: str
    attempts: int
    created_at: datetime


class OutboxRepository:
    """Queues messages in the caller's transaction.

    With ``claim_for``, every message is queued already claimed by the caller for that long
    (a lease, as a dispatcher's claim) and listed in ``claimed``: once the transaction has
    committed, the caller delivers them itself with :meth:`OutboxDispatcher.deliver`, saving
    a dispatcher's claim transaction and thread hop. If it dies first, the lease runs out (or
    :meth:`OutboxDispatcher.release_leases` frees it at start) and a dispatcher sends them."""

    def __init__(self, conn: Connection, *, claim_for: timedelta | None = None) -> None:
        self.conn = conn
        self.claim_for = claim_for
        self.claimed: list[OutboxMessage] = []

    def add(
        self,
        topic: str,
        payload: bytes,
        *,
        destination: str = "",
        headers: str = "{}",
        event_id: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Queue a message in the caller's transaction; returns its event id.

        In a unit of work's PostgreSQL pipeline (``gateway.db.pipeline_of``) the insert is
        queued with the transaction's other statements, no round trip of its own; a claimed
        message gets its row id from the sync that brings it, by the commit at the latest."""
        now = now or utcnow()
        event_id = event_id or uuid.uuid4().hex
        pipe = pipeline_of(self.conn)
        if pipe is not None:
            locked_until = None if self.claim_for is None else now + self.claim_for
            params = (event_id, topic, destination, payload, headers, now, now, locked_until)
            sql = (
                "INSERT INTO outbox (event_id, topic, destination, payload, headers, created_at,"
                " available_at, locked_until, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0)"
            )
            if locked_until is None:
                pipe.execute(sql, params)
                return event_id
            message = OutboxMessage(0, event_id, topic, destination, payload, headers, 0, now)
            claimed, index = self.claimed, len(self.claimed)
            claimed.append(message)

            def numbered(rows: list[tuple[int]]) -> None:
                if index < len(claimed) and claimed[index] is message:  # not rolled back
                    claimed[index] = replace(message, id=int(rows[0][0]))

            pipe.query(sql + " RETURNING id", params, then=numbered)
            return event_id
        row = {
            "event_id": event_id,
            "topic": topic,
            "destination": destination,
            "payload": payload,
            "headers": headers,
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        }
        if self.claim_for is None:
            run(self.conn, _INSERT_OUTBOX, row)
            return event_id
        row["locked_until"] = now + self.claim_for
        row_id = run(self.conn, _INSERT_CLAIMED, row).scalar_one()
        self.claimed.append(
            OutboxMessage(row_id, event_id, topic, destination, payload, headers, 0, now)
        )
        return event_id

    def pending_count(self) -> int:
        q = sa.select(sa.func.count()).select_from(outbox_t).where(outbox_t.c.sent_at.is_(None))
        return int(self.conn.execute(q).scalar_one())


class OutboxUnitOfWork(SqlUnitOfWork):
    outbox: OutboxRepository

    def _bind(self, conn: Connection) -> None:
        self.outbox = OutboxRepository(conn)


Sender = Callable[[OutboxMessage], None]
"""Delivers one message; raises to have it retried later."""


def backoff(attempts: int, base: float = 0.05, cap: float = 60.0) -> timedelta:
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


class OutboxDispatcher:
    """Claims due messages, hands each to the sender of its topic, records the outcome."""

    def __init__(
        self,
        engine: Engine,
        senders: Mapping[str, Sender],
        *,
        lease: timedelta = timedelta(seconds=30),
        batch: int = 50,
        clock: Callable[[], datetime] = utcnow,
        record_within: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.senders = dict(senders)
        self.lease = lease
        self.batch = batch
        self.clock = clock  # the times written: claims, backoff, sent_at
        self.monotonic = monotonic  # the seconds deliveries wait to be recorded (record_within)
        # Deliveries are recorded at most this many seconds late, several in one transaction
        # (see deliver); 0: each call of deliver records its own at once.
        self.record_within = record_within
        self._unrecorded: list[dict[str, Any]] = []
        self._unrecorded_since = 0.0
        self._unrecorded_lock = threading.Lock()
        # Built once: a statement reused with bind parameters skips SQLAlchemy's per-call
        # construction and cache-key work (several times the cost of executing it). The
        # topics are a parameter too: a literal IN list sent fastsql back to SQLAlchemy.
        self._topics = sorted(self.senders)
        now: sa.BindParameter[datetime] = sa.bindparam("now")
        due = (
            outbox_t.select()
            .where(
                outbox_t.c.sent_at.is_(None),
                outbox_t.c.available_at <= now,
                outbox_t.c.topic.in_(sa.bindparam("topics", expanding=True)),
                sa.or_(outbox_t.c.locked_until.is_(None), outbox_t.c.locked_until <= now),
            )
            .order_by(outbox_t.c.id)
            .limit(self.batch)
        )
        self._due = {"sqlite": due, "other": due.with_for_update(skip_locked=True)}
        self._lock = (
            outbox_t.update()
            .where(outbox_t.c.id.in_(sa.bindparam("ids", expanding=True)))
            .values(locked_until=sa.bindparam("until"))
        )
        self._record = outbox_t.update().where(outbox_t.c.id == sa.bindparam("k_id"))

    def release_leases(self) -> int:
        """Free the claims left on this dispatcher's topics by a process that died between
        claiming rows and recording their delivery (otherwise they wait out the lease).

        Only for a process that is the sole dispatcher of these topics, before it starts
        dispatching: the embedded SQLite deployment (one server per database file). With
        PostgreSQL replicas a claim may belong to a live peer, so leases just expire."""
        with self.engine.begin() as conn:
            result = conn.execute(
                outbox_t.update()
                .where(
                    outbox_t.c.sent_at.is_(None),
                    outbox_t.c.locked_until.is_not(None),
                    outbox_t.c.topic.in_(list(self.senders)),
                )
                .values(locked_until=None)
            )
        return int(result.rowcount or 0)

    def release_leases_at_start(self) -> int:
        """:meth:`release_leases` where this process is the sole dispatcher of its topics,
        the SQLite deployment (one server per database file): the messages of a run killed
        mid-delivery go out now, not after the lease. Elsewhere nothing (0): leases expire."""
        if self.engine.dialect.name != "sqlite" or not self.senders:
            return 0
        released = self.release_leases()
        if released:
            log.info(
                "outbox: %d claim(s) of an earlier run released (%s)",
                released,
                ", ".join(self._topics),
            )
        return released

    def _claim(self) -> list[OutboxMessage]:
        now = self.clock()
        with self.engine.begin() as conn:
            q = self._due["sqlite" if conn.dialect.name == "sqlite" else "other"]
            rows = list(run(conn, q, {"now": now, "topics": self._topics}))
            if rows:
                run(conn, self._lock, {"ids": [r.id for r in rows], "until": now + self.lease})
        return [
            OutboxMessage(
                id=r.id,
                event_id=r.event_id,
                topic=r.topic,
                destination=r.destination,
                payload=r.payload,
                headers=r.headers,
                attempts=r.attempts,
                created_at=r.created_at,
            )
            for r in rows
        ]

    def run_once(self) -> int:
        """Deliver what is due; returns how many were delivered."""
        self.record_delivered()
        return self.deliver(self._claim())

    def record_delivered(self) -> int:
        """Record the deliveries not recorded yet (see ``record_within``); how many."""
        with self._unrecorded_lock:
            rows, self._unrecorded = self._unrecorded, []
        self._record_outcomes(rows, [])
        return len(rows)

    def _record_outcomes(self, sent: list[dict[str, Any]], failed: list[dict[str, Any]]) -> None:
        if sent or failed:
            with self.engine.begin() as conn:
                # Lost in a crash, they are sent again: the commit need not wait for an fsync.
                conn.execution_options(**{NO_SYNC: True})
                for rows in (sent, failed):
                    if rows:
                        run(conn, self._record, rows)

    def deliver(self, claimed: list[OutboxMessage]) -> int:
        """Send messages claimed by the caller and record the outcomes; returns how many
        were delivered.

        The outcomes are recorded together, in one transaction after the last delivery (one
        commit instead of one per message). A crash in between only means delivered messages
        are sent again once their lease expires: delivery is at least once, and receivers
        deduplicate by ``event_id``.

        With ``record_within`` > 0, deliveries wait up to that long to be recorded together
        with later ones (at low rates, one message per call: one transaction each otherwise);
        still claimed meanwhile, they are not sent again. Whoever delivers or polls next
        (:meth:`run_once`) records them once they are due, and :meth:`record_delivered`
        at shutdown. Failures are recorded at once: they end the claim early, for a retry."""
        delivered = 0
        sent: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for msg in claimed:
            try:
                self.senders[msg.topic](msg)
            except Exception as exc:  # any failure of the far side: retry with backoff
                attempts = msg.attempts + 1
                log.warning(
                    "outbox %s %s attempt %d failed: %s", msg.topic, msg.event_id, attempts, exc
                )
                failed.append(
                    {
                        "k_id": msg.id,
                        "attempts": attempts,
                        "available_at": self.clock() + backoff(attempts),
                        "locked_until": None,
                        "last_error": str(exc)[:1000],
                    }
                )
            else:
                delivered += 1
                sent.append(
                    {
                        "k_id": msg.id,
                        "attempts": msg.attempts + 1,
                        "sent_at": self.clock(),
                        "locked_until": None,
                    }
                )
        if self.record_within > 0:
            now = self.monotonic()
            with self._unrecorded_lock:
                if sent and not self._unrecorded:
                    self._unrecorded_since = now
                self._unrecorded += sent
                due = bool(failed) or (
                    bool(self._unrecorded) and now - self._unrecorded_since >= self.record_within
                )
                if due:
                    sent, self._unrecorded = self._unrecorded, []
                else:
                    sent = []
        self._record_outcomes(sent, failed)
        return delivered


__all__ = [
    "OutboxDispatcher",
    "OutboxMessage",
    "OutboxRepository",
    "OutboxRow",
    "OutboxUnitOfWork",
    "Sender",
    "backoff",
]
