"""The transactional outbox: messages and webhooks written in the same transaction as the
state change that causes them, and delivered afterwards, at least once, with backoff.

A row is claimed by a dispatcher with a lease (``locked_until``): on PostgreSQL several
replicas poll with ``FOR UPDATE SKIP LOCKED``, and a dispatcher that dies mid-delivery loses
its lease, so the row is retried. Receivers deduplicate by ``event_id``.

Delivery is the engine both parties share (:mod:`gateway.messaging.delivery`): this module
gives it the gateway's rows (:class:`LeasedRows`: claimed with a lease, recorded with
``sent_at``) and their transmission (the sender of each row's topic), as
:class:`OutboxDispatcher`.

On PostgreSQL each of the dispatcher's transactions is one statement run alone, in
autocommit mode (:class:`_PgLeases`): a claim is an ``UPDATE ... RETURNING`` of the rows it
leases (an idle poll, one round trip where BEGIN, the read and COMMIT took three), the
deliveries of a round are recorded by one ``UPDATE ... FROM unnest(...)`` whatever their
number.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
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
from gateway.messaging.delivery import Backoff, DeliveryEngine, Outcome, Recording, Sent
from gateway.messaging.lanes import Lane, LaneSettings
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

_OUTBOX_COLUMNS = "id, event_id, topic, destination, payload, headers, attempts, created_at"
# The due rows' ids through the partial index of unsent rows (its condition a constant here).
_PG_CLAIM = (
    "UPDATE outbox SET locked_until = %s WHERE id IN (SELECT id FROM outbox"
    " WHERE sent_at IS NULL AND available_at <= %s AND topic = ANY(%s)"
    " AND (locked_until IS NULL OR locked_until <= %s)"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
    f" RETURNING {_OUTBOX_COLUMNS}"
)
_PG_RECORD_SENT = (
    "UPDATE outbox AS o SET attempts = v.attempts, sent_at = v.sent_at, locked_until = NULL"
    " FROM unnest(%s::bigint[], %s::integer[], %s::timestamptz[]) AS v(id, attempts, sent_at)"
    " WHERE o.id = v.id"
)
_PG_RESCHEDULE = (
    "UPDATE outbox SET attempts = %s, available_at = %s, locked_until = NULL, last_error = %s"
    " WHERE id = %s"
)


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
        with_: tuple[str, Sequence[Any]] | None = None,
    ) -> str:
        """Queue a message in the caller's transaction; returns its event id.

        In a unit of work's PostgreSQL pipeline (``gateway.db.pipeline_of``) the insert is
        queued with the transaction's other statements, no round trip of its own; a claimed
        message gets its row id from the sync that brings it, by the commit at the latest.
        There, ``with_`` (a ``WITH`` clause and its parameters) puts other writes of the
        caller's in the same statement (the PvP message the row sends, in its trail)."""
        now = now or utcnow()
        event_id = event_id or uuid.uuid4().hex
        pipe = pipeline_of(self.conn)
        if pipe is None and with_ is not None:
            raise ValueError("a WITH clause rides only with a PostgreSQL pipeline's insert")
        if pipe is not None:
            locked_until = None if self.claim_for is None else now + self.claim_for
            params: tuple[Any, ...] = (
                event_id,
                topic,
                destination,
                payload,
                headers,
                now,
                now,
                locked_until,
            )
            sql = (
                "INSERT INTO outbox (event_id, topic, destination, payload, headers, created_at,"
                " available_at, locked_until, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0)"
            )
            if with_ is not None:
                sql, params = f"{with_[0]} {sql}", (*with_[1], *params)
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

_BACKOFF = Backoff()
_ONE_LANE_THREAD = LaneSettings()


def backoff(attempts: int) -> timedelta:
    """How long a message that failed ``attempts`` times waits before it is due again."""
    return timedelta(seconds=_BACKOFF.after(attempts))


def lane_of(destination: str) -> str:
    """The lane of a destination URL: its host and port (``""`` for none). The connector's
    messages share one lane, each exchange's webhook endpoint host has its own."""
    parts = destination.split("/", 3)
    return parts[2] if len(parts) > 2 else ""


class LeasedRows:
    """The gateway's outbox rows for :class:`~gateway.messaging.delivery.DeliveryEngine`:
    claimed with a lease written in the row (``locked_until``; on PostgreSQL ``FOR UPDATE
    SKIP LOCKED``, so replicas claim different rows), recorded with ``sent_at``.

    A row this process claimed stays held here until recorded or due again: claimed again
    once its lease has passed (still queued behind a slow destination, say), its lease is
    renewed but it is not handed out twice."""

    def __init__(
        self,
        engine: Engine,
        topics: list[str],
        *,
        lease: timedelta,
        batch: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.lease = lease
        self.batch = batch
        self.clock = clock  # the times written: claims, backoff, sent_at
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        # Built once: a statement reused with bind parameters skips SQLAlchemy's per-call
        # construction and cache-key work (several times the cost of executing it). The
        # topics are a parameter too: a literal IN list sent fastsql back to SQLAlchemy.
        self.topics = sorted(topics)
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
        self._due = {"sqlite": due}
        self._lock = (
            outbox_t.update()
            .where(outbox_t.c.id.in_(sa.bindparam("ids", expanding=True)))
            .values(locked_until=sa.bindparam("until"))
        )
        self._record = outbox_t.update().where(outbox_t.c.id == sa.bindparam("k_id"))
        self._pg = _PgLeases(engine) if engine.dialect.name == "postgresql" else None

    def claim_due(self) -> tuple[list[OutboxMessage], bool]:
        now = self.clock()
        found: list[OutboxMessage]
        if self._pg is not None:
            found = self._pg.claim(now, now + self.lease, self.topics, self.batch)
        else:
            with self.engine.begin() as conn:
                rows = list(run(conn, self._due["sqlite"], {"now": now, "topics": self.topics}))
                if rows:
                    until = now + self.lease
                    run(conn, self._lock, {"ids": [r.id for r in rows], "until": until})
            found = [
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
        with self._held_lock:
            claimed = [msg for msg in found if msg.id not in self._held]
            self._held.update(msg.id for msg in claimed)
        return claimed, len(found) == self.batch

    def release(self, rows: Sequence[OutboxMessage]) -> None:
        # Due again: their claim was ended when they were rescheduled.
        self._let_go(rows)

    def _let_go(self, rows: Sequence[OutboxMessage]) -> None:
        with self._held_lock:
            self._held.difference_update(msg.id for msg in rows)

    def record_sent(self, sent: Sequence[Sent[OutboxMessage]]) -> None:
        if self._pg is not None:
            self._pg.record_sent(sent)
            self._let_go([s.row for s in sent])
            return
        records = [
            {
                "k_id": s.row.id,
                "attempts": s.row.attempts + 1,
                "sent_at": s.at,
                "locked_until": None,
            }
            for s in sent
        ]
        with self.engine.begin() as conn:
            # Lost in a crash, they are sent again: the commit need not wait for an fsync.
            conn.execution_options(**{NO_SYNC: True})
            run(conn, self._record, records)
        self._let_go([s.row for s in sent])

    def reschedule(
        self, row: OutboxMessage, delay: float, attempts: int, error: str, batch: None
    ) -> None:
        available_at = self.clock() + timedelta(seconds=delay)
        if self._pg is not None:
            self._pg.reschedule(row.id, attempts, available_at, error[:1000])
            return
        again = {
            "k_id": row.id,
            "attempts": attempts,
            "available_at": available_at,
            "locked_until": None,
            "last_error": error[:1000],
        }
        with self.engine.begin() as conn:
            conn.execution_options(**{NO_SYNC: True})  # lost, the claim runs out: retried
            run(conn, self._record, again)

    def lane_of(self, row: OutboxMessage) -> str:
        return lane_of(row.destination)

    def label(self, row: OutboxMessage) -> str:
        return f"{row.topic} {row.event_id}"

    def now(self) -> datetime:
        return self.clock()

    def release_leases(self) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                outbox_t.update()
                .where(
                    outbox_t.c.sent_at.is_(None),
                    outbox_t.c.locked_until.is_not(None),
                    outbox_t.c.topic.in_(self.topics),
                )
                .values(locked_until=None)
            )
        return int(result.rowcount or 0)


class _PgLeases:
    """:class:`LeasedRows`' statements on PostgreSQL, each alone in autocommit mode: one
    statement is atomic by itself, and its BEGIN and COMMIT were a round trip each (the
    COMMIT of the statement still waits for its flush: ``synchronous_commit`` is on)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            result = conn.exec_driver_sql(sql, tuple(params))
            rows = list(result) if result.returns_rows else []
            conn.commit()  # nothing left to send: the statement committed itself
            return rows

    def claim(
        self, now: datetime, until: datetime, topics: list[str], limit: int
    ) -> list[OutboxMessage]:
        """Lease the due rows (``SKIP LOCKED``: rows another replica is claiming are not
        waited for), oldest first."""
        rows = self._run(_PG_CLAIM, (until, now, topics, now, limit))
        return [
            OutboxMessage(
                id=r.id,
                event_id=r.event_id,
                topic=r.topic,
                destination=r.destination,
                payload=bytes(r.payload),
                headers=r.headers,
                attempts=r.attempts,
                created_at=r.created_at.astimezone(UTC),
            )
            for r in sorted(rows, key=lambda r: r.id)
        ]

    def record_sent(self, sent: Sequence[Sent[OutboxMessage]]) -> None:
        ids = [s.row.id for s in sent]
        attempts = [s.row.attempts + 1 for s in sent]
        self._run(_PG_RECORD_SENT, (ids, attempts, [s.at for s in sent]))

    def reschedule(self, row_id: int, attempts: int, available_at: datetime, error: str) -> None:
        self._run(_PG_RESCHEDULE, (attempts, available_at, error, row_id))


class _TopicSenders:
    """Transmits a row with the sender of its topic."""

    def __init__(self, senders: Mapping[str, Sender]) -> None:
        self.senders = senders

    def transmit(self, row: OutboxMessage, lane: Lane[OutboxMessage], batch: None) -> Outcome:
        self.senders[row.topic](row)
        return "sent"


class OutboxDispatcher:
    """The gateway's outbox on the delivery engine (:mod:`gateway.messaging.delivery`): claims
    due messages, hands each to the sender of its topic, records the outcome.

    Driven three ways: :meth:`run_once` claims and delivers on the calling thread;
    :meth:`dispatch` (the scheduled job) claims and hands the rows to the lanes of their
    destinations, so that a slow endpoint holds up its own rows only; :meth:`start` runs the
    engine's dispatcher thread (the PvP runtime), woken by :meth:`wake`. Rows a writer claimed
    in its own transaction are delivered by it (:meth:`deliver`) or handed to the lanes
    (:meth:`hand_out`)."""

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
        name: str = "gateway",
        lanes: LaneSettings = _ONE_LANE_THREAD,
        poll: float = 0.2,
    ) -> None:
        self.engine = engine
        self.senders = dict(senders)
        self.lease = lease
        self.rows = LeasedRows(engine, list(self.senders), lease=lease, batch=batch, clock=clock)
        # Deliveries are recorded at most record_within seconds late, several in one
        # transaction; 0: each as it is reported.
        self.delivery: DeliveryEngine[OutboxMessage, None] = DeliveryEngine(
            name,
            self.rows,
            _TopicSenders(self.senders),
            lanes=lanes,
            recording=Recording(within=record_within),
            backoff=_BACKOFF,
            poll=poll,
            monotonic=monotonic,
        )

    def release_leases(self) -> int:
        """Free the claims left on this dispatcher's topics by a process that died between
        claiming rows and recording their delivery (otherwise they wait out the lease).

        Only for a process that is the sole dispatcher of these topics, before it starts
        dispatching: the embedded SQLite deployment (one server per database file). With
        PostgreSQL replicas a claim may belong to a live peer, so leases just expire."""
        return self.rows.release_leases()

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
                ", ".join(self.rows.topics),
            )
        return released

    def run_once(self) -> int:
        """Deliver what is due on this thread; returns how many were delivered."""
        self.record_delivered()
        claimed, _ = self.rows.claim_due()
        return self.deliver(claimed)

    def dispatch(self) -> int:
        """Record what waits, claim what is due and hand it to the lanes; how many."""
        self.record_delivered()
        return self.delivery.dispatch()

    def deliver(self, claimed: list[OutboxMessage]) -> int:
        """Send messages claimed by the caller, on this thread; returns how many were
        delivered.

        Deliveries are recorded together, several in one transaction (one commit instead of
        one per message), at most ``record_within`` seconds late: by the dispatcher thread
        while it runs, else by whoever delivers or polls next (:meth:`run_once`), and by
        :meth:`stop`. Still claimed meanwhile, they are not sent again; a crash in between
        only means delivered messages are sent again once their lease expires: delivery is
        at least once, and receivers deduplicate by ``event_id``. A failure is recorded at
        once: it ends the claim early, for a retry after the backoff."""
        return self.delivery.deliver_here(claimed)

    def hand_out(self, claimed: list[OutboxMessage]) -> int:
        """Messages claimed by the caller, to the lanes of their destinations."""
        return self.delivery.hand_out(claimed)

    def record_delivered(self) -> int:
        """Record the deliveries not recorded yet (see ``record_within``); how many."""
        return self.delivery.record(force=True)

    def start(self, thread_name: str) -> None:
        """Run the engine's dispatcher: woken by :meth:`wake`, polling for retries."""
        self.delivery.start(thread_name)

    def wake(self) -> None:
        """A transaction that queued messages for the dispatcher has committed."""
        self.delivery.wake()

    def stop(self) -> None:
        """Stop the dispatcher and the lanes, and record what they delivered."""
        self.delivery.stop()
        self.delivery.join()
        self.delivery.stop_lanes()


__all__ = [
    "LeasedRows",
    "OutboxDispatcher",
    "OutboxMessage",
    "OutboxRepository",
    "OutboxRow",
    "OutboxUnitOfWork",
    "Sender",
    "backoff",
    "lane_of",
]
