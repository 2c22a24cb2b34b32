"""The PvP repository and unit of work: the SQL behind the use cases. The tables and their
rows' conversions are in :mod:`gateway.pvp.rows`; nothing outside this package sees a row."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway import telemetry
from gateway.db import SqlUnitOfWork
from gateway.ledger.store import SqlLedgerRepository
from gateway.messaging.outbox import OutboxMessage, OutboxRepository, outbox_t
from gateway.pvp.model import FINAL_STATES, Instruction, Leg, LegState, MessageRecord
from gateway.pvp.rows import (
    AuditRow,
    InboxRow,
    InstructionRow,
    LegRow,
    MessageLegRow,
    MessageRow,
    audit_t,
    inbox_t,
    instruction_of,
    instruction_t,
    instruction_values,
    leg_of,
    leg_t,
    leg_values,
    message_leg_t,
    message_t,
)
from gateway.sqlite import fastsql
from gateway.sqlite.fastsql import run

# Statements of the per-message path, built once. Building a Core statement and its cache
# key on every call cost 3-5x the execution itself (70-100 µs against ~20 µs on SQLite);
# a statement object reused with bind parameters keeps its memoized cache key.
_LEGS_BY_UETR = leg_t.select().where(leg_t.c.uetr.in_(sa.bindparam("uetrs", expanding=True)))
_LEGS_FOR_UPDATE = (
    _LEGS_BY_UETR.order_by(leg_t.c.uetr),
    _LEGS_BY_UETR.order_by(leg_t.c.uetr).with_for_update(),
)
_UPDATE_LEG = leg_t.update().where(leg_t.c.uetr == sa.bindparam("k_uetr"))
# As the partial index ix_pvp_leg_locked_deadline says it, a constant in the SQL text: with
# a bound parameter SQLite cannot know that the index applies.
_LOCKED = leg_t.c.state == sa.literal_column(f"'{LegState.LOCKED.value}'")
_LOCKED_LEGS_PAST = (
    leg_t.select()
    .where(_LOCKED, leg_t.c.deadline <= sa.bindparam("cutoff"))
    .order_by(leg_t.c.deadline)
    .limit(sa.bindparam("limit"))
)
_ALERTED_LEGS = (
    leg_t.select()
    .where(_LOCKED, leg_t.c.alert_at.is_not(None))
    .order_by(leg_t.c.alert_at)
    .limit(sa.bindparam("limit"))
)
_INBOX_PENDING = (
    sa.select(inbox_t.c.message_id)
    .where(inbox_t.c.processed_at.is_(None))
    .order_by(inbox_t.c.message_id)
    .limit(sa.bindparam("limit"))
)
_INBOX_DUE = _INBOX_PENDING.where(inbox_t.c.available_at <= sa.bindparam("now"))
_INBOUND_SHA = sa.select(message_t.c.sha256).where(
    message_t.c.direction == "in",
    message_t.c.sender_bic == sa.bindparam("sender"),
    message_t.c.msg_def_id == sa.bindparam("def_id"),
    message_t.c.msg_id == sa.bindparam("msg_id"),
)
_INSERT_MESSAGE = message_t.insert().returning(message_t.c.id)
_INSERT_MESSAGE_LEG = message_leg_t.insert()
_INSERT_LEG = leg_t.insert()
_MESSAGE_RAW = sa.select(message_t.c.raw, message_t.c.sender_bic).where(
    message_t.c.id == sa.bindparam("id")
)
_INSERT_INBOX = inbox_t.insert()
_INBOX_STATE = sa.select(inbox_t.c.processed_at).where(inbox_t.c.message_id == sa.bindparam("id"))
_INBOX_CLAIM = (_INBOX_STATE, _INBOX_STATE.with_for_update())
_INBOX_DONE = (
    inbox_t.update()
    .where(inbox_t.c.message_id == sa.bindparam("id"))
    .values(processed_at=sa.bindparam("at"), attempts=inbox_t.c.attempts + 1, last_error=None)
)
# The messages linked to a leg, with the outbox state of each. Direction and sent_at are
# tested in Python: as WHERE terms, SQLite (without statistics) searched through the index on
# ``direction`` (every outbound message ever) or the unsent outbox rows' index instead
# of the leg's few messages by ``uetr``.
_LEG_MESSAGES_OUTBOX = (
    sa.select(message_t.c.direction, outbox_t.c.sent_at)
    .select_from(
        message_leg_t.join(message_t, message_t.c.id == message_leg_t.c.message_id).join(
            outbox_t, outbox_t.c.event_id == message_t.c.msg_id
        )
    )
    .where(message_leg_t.c.uetr == sa.bindparam("uetr"))
)
_INSTRUCTIONS_BY_ID = (
    instruction_t.select()
    .where(instruction_t.c.instruction_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(instruction_t.c.instruction_id)
)
_INSTRUCTIONS_FOR_UPDATE = (_INSTRUCTIONS_BY_ID, _INSTRUCTIONS_BY_ID.with_for_update())


Direction = Literal["in", "out", "rejected"]

MessageId = Callable[[], int]
"""A stored message's id, once the database has given it: on PostgreSQL it comes back with
the transaction's next wait for the server (its commit at the latest), and asking for it
earlier is a round trip."""


class SqlPvPRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._pg = conn.dialect.name == "postgresql"
        self._open: set[str] = set()  # legs read for update in a state that is not final
        self.finished: list[tuple[str, float]] = []
        """(state, seconds since received) of each leg this transaction made final, for
        :mod:`gateway.telemetry` once it commits."""

    def _for_update(self, q: Any) -> Any:
        return q.with_for_update() if self._pg else q

    # legs ------------------------------------------------------------------

    def legs_for_update(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        ids = sorted(set(uetrs))
        if not ids:
            return {}
        q = _LEGS_FOR_UPDATE[self._pg]
        legs = {r.uetr: leg_of(r) for r in run(self.conn, q, {"uetrs": ids})}
        self._open.update(u for u, leg in legs.items() if leg.state not in FINAL_STATES)
        return legs

    def legs(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        ids = sorted(set(uetrs))
        if not ids:
            return {}
        return {r.uetr: leg_of(r) for r in run(self.conn, _LEGS_BY_UETR, {"uetrs": ids})}

    def legs_by_ref(self, ref: str) -> list[Leg]:
        """Legs whose PvP id, UETR or EndToEndId (the DT instruction id) is ``ref``."""
        q = leg_t.select().where(
            sa.or_(leg_t.c.pvp_id == ref, leg_t.c.uetr == ref, leg_t.c.end_to_end_id == ref)
        )
        return [leg_of(r) for r in self.conn.execute(q.order_by(leg_t.c.created_at))]

    def insert_legs(self, legs: Sequence[Leg]) -> None:
        if legs:
            run(self.conn, _INSERT_LEG, [leg_values(leg) for leg in legs])

    def update_legs(self, legs: Sequence[Leg]) -> None:
        rows = []
        for leg in legs:
            values = leg_values(leg)
            values["k_uetr"] = values.pop("uetr")  # the key, not a column to set
            rows.append(values)
            self._count_if_final(leg)
        if rows:
            run(self.conn, _UPDATE_LEG, rows)

    def _count_if_final(self, leg: Leg) -> None:
        """A leg this transaction read open and now makes final: for ``finished``."""
        if leg.state in FINAL_STATES and leg.uetr in self._open:
            self._open.discard(leg.uetr)
            took = (leg.updated_at - leg.created_at).total_seconds()
            self.finished.append((leg.state.value, took))

    def locked_legs_past(self, cutoff: datetime, limit: int) -> list[Leg]:
        rows = self.conn.execute(_LOCKED_LEGS_PAST, {"cutoff": cutoff, "limit": limit})
        return [leg_of(r) for r in rows]

    def alerted_legs(self, limit: int) -> list[Leg]:
        return [leg_of(r) for r in self.conn.execute(_ALERTED_LEGS, {"limit": limit})]

    # messages --------------------------------------------------------------

    def inbound_sha(
        self,
        sender: str | None,
        msg_def_id: str,
        msg_id: str,
        legs: Iterable[str] = (),
        instructions: Iterable[str] = (),
    ) -> str | None:
        """The SHA-256 of the inbound message with this id from ``sender``, if received (the
        same bytes again are a duplicate; other bytes under the same id are refused).
        ``legs``, the UETRs the message names, and ``instructions``, those that will follow
        them (the message applied in this transaction), are for a repository that reads them
        for update in the same statement (PostgreSQL's, ``gateway.pvp.pgstore``)."""
        params = {"sender": sender, "def_id": msg_def_id, "msg_id": msg_id}
        row = run(self.conn, _INBOUND_SHA, params).first()
        return None if row is None else cast(str, row.sha256)

    def add_inbound(
        self,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str | None,
        receiver: str | None,
        msg_def_id: str,
        msg_id: str,
        uetrs: Iterable[str] = (),
        inbox_at: datetime | None = None,
    ) -> MessageId:
        """Store a received message, its links to the legs it names and, with ``inbox_at``
        (when it is due), its inbox item; its id."""
        message_id = self._add_message(
            "in",
            raw,
            sha256,
            now,
            sender=sender,
            receiver=receiver,
            msg_def_id=msg_def_id,
            msg_id=msg_id,
            uetrs=uetrs,
        )
        if inbox_at is not None:
            self.add_inbox(message_id, now, inbox_at)
        return lambda: message_id

    def _add_message(
        self,
        direction: Direction,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str | None = None,
        receiver: str | None = None,
        msg_def_id: str | None = None,
        msg_id: str | None = None,
        reason: str | None = None,
        uetrs: Iterable[str] = (),
    ) -> int:
        result = run(
            self.conn,
            _INSERT_MESSAGE,
            {
                "direction": direction,
                "sender_bic": sender,
                "receiver_bic": receiver,
                "msg_def_id": msg_def_id,
                "msg_id": msg_id,
                "sha256": sha256,
                "reason": reason,
                "raw": raw,
                "created_at": now,
            },
        )
        message_id = int(result.scalar_one())
        links = [{"message_id": message_id, "uetr": u} for u in dict.fromkeys(uetrs)]
        if links:
            run(self.conn, _INSERT_MESSAGE_LEG, links)
        return message_id

    def record_message(
        self,
        direction: Direction,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str | None = None,
        receiver: str | None = None,
        msg_def_id: str | None = None,
        msg_id: str | None = None,
        reason: str | None = None,
        uetrs: Iterable[str] = (),
    ) -> None:
        """Store a message (an outbound one, or a refused one) and its links to the legs it
        names, for a caller that needs no id (one statement on PostgreSQL, with no answer to
        wait for)."""
        self._add_message(
            direction,
            raw,
            sha256,
            now,
            sender=sender,
            receiver=receiver,
            msg_def_id=msg_def_id,
            msg_id=msg_id,
            reason=reason,
            uetrs=uetrs,
        )

    def outbound_with(
        self,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str,
        receiver: str,
        msg_def_id: str,
        msg_id: str,
        uetrs: Iterable[str] = (),
    ) -> tuple[str, tuple[Any, ...]] | None:
        """An outbound message and its links as the ``WITH`` clause (and its parameters) of
        the statement that queues it in the outbox, where one statement can do both
        (PostgreSQL's repository); None: store it with :meth:`record_message`."""
        return None

    def reply_pending(self, uetr: str) -> bool:
        """Whether a message about this leg still waits in the outbox to be sent."""
        rows = run(self.conn, _LEG_MESSAGES_OUTBOX, {"uetr": uetr})
        return any(r.direction == "out" and r.sent_at is None for r in rows)

    def message_raw(self, message_id: int) -> tuple[bytes, str | None] | None:
        row = run(self.conn, _MESSAGE_RAW, {"id": message_id}).first()
        return None if row is None else (bytes(row.raw), row.sender_bic)

    def trail(self, uetrs: Sequence[str], extra_ids: Sequence[int] = ()) -> list[MessageRecord]:
        linked = sa.select(message_leg_t.c.message_id).where(message_leg_t.c.uetr.in_(uetrs))
        cond: sa.ColumnElement[bool] = message_t.c.id.in_(linked)
        if extra_ids:
            cond = sa.or_(cond, message_t.c.id.in_(list(extra_ids)))
        q = sa.select(
            message_t.c.id,
            message_t.c.direction,
            message_t.c.msg_def_id,
            message_t.c.msg_id,
            message_t.c.sha256,
            message_t.c.created_at,
            message_t.c.reason,
        ).where(cond)
        return [
            MessageRecord(
                id=r.id,
                direction=r.direction,
                msg_def_id=r.msg_def_id,
                msg_id=r.msg_id,
                sha256=r.sha256,
                created_at=r.created_at,
                reason=r.reason,
            )
            for r in self.conn.execute(q.order_by(message_t.c.id))
        ]

    # inbox -----------------------------------------------------------------

    def add_inbox(self, message_id: int, now: datetime, available_at: datetime) -> None:
        run(
            self.conn,
            _INSERT_INBOX,
            {
                "message_id": message_id,
                "received_at": now,
                "available_at": available_at,
                "attempts": 0,
            },
        )

    def inbox_claim(self, message_id: int, now: datetime, legs: Iterable[str] = ()) -> bool:
        """Row-lock the inbox item; True when it still awaits processing (then
        :meth:`inbox_done` once applied). ``now`` and ``legs`` (the UETRs its message names)
        are for PostgreSQL's repository, which marks it processed and reads the legs for update
        in the same round trip."""
        row = run(self.conn, _INBOX_CLAIM[self._pg], {"id": message_id}).first()
        return row is not None and row.processed_at is None

    def inbox_done(self, message_id: int, now: datetime) -> None:
        run(self.conn, _INBOX_DONE, {"id": message_id, "at": now})

    def inbox_attempts(self, message_id: int) -> int:
        q = sa.select(inbox_t.c.attempts).where(inbox_t.c.message_id == message_id)
        return int(self.conn.execute(q).scalar_one_or_none() or 0)

    def inbox_failed(self, message_id: int, error: str, available_at: datetime) -> None:
        self.conn.execute(
            inbox_t.update()
            .where(inbox_t.c.message_id == message_id)
            .values(
                attempts=inbox_t.c.attempts + 1, last_error=error[:1000], available_at=available_at
            )
        )

    def inbox_due(self, now: datetime | None, limit: int) -> list[int]:
        """Unprocessed items, oldest first; only those available by ``now`` unless None."""
        if now is None:
            rows = self.conn.execute(_INBOX_PENDING, {"limit": limit})
        else:
            rows = self.conn.execute(_INBOX_DUE, {"now": now, "limit": limit})
        return [int(r[0]) for r in rows]

    # instructions ----------------------------------------------------------

    def instruction(self, instruction_id: str, *, for_update: bool = False) -> Instruction | None:
        q = instruction_t.select().where(instruction_t.c.instruction_id == instruction_id)
        row = self.conn.execute(self._for_update(q) if for_update else q).first()
        return None if row is None else instruction_of(row)

    def instruction_fingerprint(self, instruction_id: str) -> str | None:
        q = sa.select(instruction_t.c.fingerprint).where(
            instruction_t.c.instruction_id == instruction_id
        )
        row = self.conn.execute(q).first()
        return None if row is None else cast(str, row.fingerprint)

    def instructions_for_update(self, ids: Iterable[str]) -> dict[str, Instruction]:
        keys = sorted(set(ids))
        if not keys:
            return {}
        q = _INSTRUCTIONS_FOR_UPDATE[self._pg]
        return {r.instruction_id: instruction_of(r) for r in run(self.conn, q, {"ids": keys})}

    def prefetch_instructions(self, ids: Iterable[str]) -> None:
        """Instructions :meth:`instructions_for_update` will be asked for: PostgreSQL's
        repository reads them with the next statement it waits for (here: nothing)."""

    def instructions_by_pvp(self, pvp_id: str) -> list[Instruction]:
        q = instruction_t.select().where(instruction_t.c.pvp_id == pvp_id)
        return [instruction_of(r) for r in self.conn.execute(q)]

    def insert_instruction(self, inst: Instruction) -> None:
        self.conn.execute(instruction_t.insert(), instruction_values(inst))

    def update_instruction(self, inst: Instruction) -> None:
        values = instruction_values(inst)
        self.conn.execute(
            instruction_t.update()
            .where(instruction_t.c.instruction_id == inst.instruction_id)
            .values(**values)
        )

    # audit -----------------------------------------------------------------

    def add_audit(
        self,
        *,
        ref: str,
        uetr: str,
        action: str,
        key_id: str,
        label: str,
        reason: str,
        now: datetime,
    ) -> None:
        self.conn.execute(
            audit_t.insert(),
            {
                "ref": ref[:64],
                "uetr": uetr,
                "action": action,
                "actor_key_id": key_id,
                "actor_label": label[:200],
                "reason": reason[:1000],
                "created_at": now,
            },
        )

    def audit(self, uetrs: Sequence[str]) -> list[dict[str, Any]]:
        q = audit_t.select().where(audit_t.c.uetr.in_(uetrs)).order_by(audit_t.c.id)
        return [
            {
                "uetr": r.uetr,
                "action": r.action,
                "actor_key_id": r.actor_key_id,
                "actor_label": r.actor_label,
                "reason": r.reason,
                "at": r.created_at,
            }
            for r in self.conn.execute(q)
        ]

    # savepoints --------------------------------------------------------------

    def snapshot(self) -> object:
        """What a savepoint's rollback must restore here (nothing: no state but the rows)."""
        return None

    def flush(self) -> None:
        """Send what this repository holds back to go with the COMMIT (here: nothing)."""

    def restore(self, snapshot: object) -> None:
        """Back to :meth:`snapshot` (the savepoint's rows were rolled back)."""


class PvPUnitOfWork(SqlUnitOfWork):
    """One transaction over the ledger, the outbox and the PvP tables.

    With ``claim_outbound_for``, what its transaction queues in the outbox is claimed for the
    caller (``claimed``), which sends it once the transaction commits; without, a dispatcher
    does. Legs made final are counted (``gateway.telemetry``) once it commits. On PostgreSQL
    its statements share the transaction's pipeline (``gateway.db``) and the PvP tables'
    are :mod:`gateway.pvp.pgstore`'s.
    """

    pipelined = True
    ledger: SqlLedgerRepository
    outbox: OutboxRepository
    pvp: SqlPvPRepository

    def __init__(
        self, engine: Any, *, readonly: bool = False, claim_outbound_for: timedelta | None = None
    ) -> None:
        super().__init__(engine, readonly=readonly)
        self.claim_outbound_for = claim_outbound_for
        self._claimed: list[OutboxMessage] = []

    def _bind(self, conn: Connection) -> None:
        self.ledger = SqlLedgerRepository(conn, pipeline=self.pg)
        # With claim_outbound_for, queued messages are claimed for the caller, which sends
        # them itself once this commits (see OutboxRepository).
        self.outbox = OutboxRepository(conn, claim_for=self.claim_outbound_for)
        self._claimed = self.outbox.claimed
        if self.pg is None:
            self.pvp = SqlPvPRepository(conn)
        else:
            from gateway.pvp.pgstore import PgPvPRepository  # it builds on this module

            self.pvp = PgPvPRepository(conn, self.pg)

    @property
    def claimed(self) -> list[OutboxMessage]:
        """What its last transaction queued claimed for the caller to send (with
        ``claim_outbound_for``); nothing if it never began one, as when every envelope of a
        reception was refused before its transaction."""
        return self._claimed

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: leaving it by an exception undoes only what it did, in the
        database and here (the messages it claimed for sending, the legs it made final)."""
        claimed, finished = len(self.outbox.claimed), len(self.pvp.finished)
        held = self.pvp.snapshot()
        try:
            with fastsql.savepoint(self.conn) if self.pg is None else self.pg.savepoint():
                yield
        except BaseException:
            del self.outbox.claimed[claimed:]
            del self.pvp.finished[finished:]
            self.pvp.restore(held)
            raise

    def _commit_pending(self) -> None:
        self.pvp.flush()  # the legs held back (inserted, then changed in this transaction)
        super()._commit_pending()

    def commit(self) -> None:
        super().commit()
        finished, self.pvp.finished = self.pvp.finished, []
        for state, seconds in finished:
            telemetry.leg_finished(state, seconds)


__all__ = [
    "AuditRow",
    "InboxRow",
    "InstructionRow",
    "LegRow",
    "MessageId",
    "MessageLegRow",
    "MessageRow",
    "PvPUnitOfWork",
    "SqlPvPRepository",
    "audit_t",
    "inbox_t",
    "instruction_t",
    "leg_t",
    "message_leg_t",
    "message_t",
]
