"""The connector's protocol: one handler per inbound message type (pacs.002, camt.029,
pacs.028, admi.002) and one for the decision, each working in the caller's unit of work
(:class:`~gateway.connector.outbox.Work`), reading and writing the tables through the
repository (:class:`~gateway.connector.repository.Repository`), and recording in the unit of
work what it produced: outbox rows to hand to the lanes once committed, and the fault steps
reached. None of them commits or calls back into the runtime.

The decision is THE decision of a PvP (``decisions`` row, final by the store's triggers),
taken in the same transaction as the outbox rows that deliver it: COMMIT once both legs are
locked before ``deadline - margin``, ABORT on a rejection or once that moment has passed
(:mod:`gateway.connector.model`).

A message to a simulated bank may be answered in the same transaction (``sim_inline``): the
bank handles it there and its answers are taken as any inbound message (:meth:`Handlers.take`),
so writing an outgoing message may run handlers in turn.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.config import Settings
from gateway.connector.faults import Faults
from gateway.connector.messages import decision_message, decision_status, new_id, original
from gateway.connector.model import DecisionKind, LegStatus, PvPState
from gateway.connector.outbox import Outbox, Outgoing, Step, Work, logged
from gateway.connector.repository import Repository, SqlRepository
from gateway.connector.rows import Found, LegRow, PvPRow
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms
from gateway.iso20022 import (
    Admi002,
    Camt029,
    Message,
    MessageRejected,
    Pacs002,
    Pacs028,
    TransactionStatus,
)

log = logging.getLogger(__name__)


class Handlers:
    """The handlers, with what they need: the settings, the outbox's message builder, the
    simulated banks (for answers in the sender's transaction), the fault rules and the
    repository of the connector's tables (by default the SQL one)."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        sim: SimulatedNetworks,
        faults: Faults,
        repo: Repository | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.connector
        self.bic = self.cfg.bic
        self.margin = self.cfg.safety_margin_ms
        self.outbox = outbox
        self.sim = sim
        self.faults = faults
        self.repo: Repository = SqlRepository() if repo is None else repo

    # --- writing what to send -----------------------------------------------------------

    def enqueue(self, work: Work, pvp_ids: list[str], dest: str, msg: Message) -> None:
        self.write_outgoing(work, [self.outbox.outgoing(pvp_ids, dest, msg)])

    def write_outgoing(self, work: Work, items: list[Outgoing]) -> None:
        """Write messages to send in ``work``'s transaction. Those to a simulated bank are
        answered there and then when :meth:`inline` allows: written as sent, followed by the
        bank's handling and the processing of its answers; the others are recorded in
        ``work.sent`` for the lanes, after the commit."""
        if not items:
            return
        inline = [item for item in items if item.message is not None] if self.inline() else []
        if len(inline) < len(items):
            answered = {id(item) for item in inline}
            work.sent.extend(item.outbox["msg_id"] for item in items if id(item) not in answered)
        for item in inline:
            item.outbox["sent_at"] = item.outbox["created_at"]
            item.outbox["attempts"] = 1
        self.repo.insert_outbox(work, [item.outbox for item in items])
        work.log.extend(item.log for item in items)
        for item in inline:
            msg = item.message
            assert msg is not None
            self.outbox.take_built(msg.id)
            self.simulated_turn(work, item.outbox["payload"], item.outbox["destination_bic"], msg)

    def inline(self) -> bool:
        """Whether a simulated bank answers in the sender's transaction (``sim_inline``):
        not while fault rules or crash points are set, which act on deliveries and their
        steps (and are what the steps of processing the answers fire)."""
        return (
            self.cfg.sim_inline
            and not self.faults.active()
            and not self.settings.faults.crash_points
        )

    def simulated_turn(self, work: Work, raw: bytes, bic: str, built: Message | None) -> None:
        """In ``work``'s transaction: the simulated bank ``bic`` handles ``raw`` (``built``:
        the message it was built from, if at hand) and the connector takes its answers."""
        for message, answer in self.sim.handle(raw, bic, conn=work.conn, message=built):
            sha = hashlib.sha256(answer).hexdigest()
            self.take(work, message, bic, sha, answer, fresh=True)

    # --- inbound ------------------------------------------------------------------------

    def take(
        self, work: Work, msg: Message, sender: str, sha: str, raw: bytes, *, fresh: bool = False
    ) -> bool:
        """Process a message and store it, processed, in ``work``; False (nothing done) for
        the same bytes again, DU01 for other bytes under its id. Its bytes go in the inbox
        row only if no PvP's log has them (see ``schema.inbox``). ``fresh``: a simulated
        bank's answer built in this transaction, under a new id (``sortable_id``): no
        duplicate to look for (the inbox's unique key would refuse one)."""
        received = None if fresh else (sender, msg.MESSAGE_ID, msg.id)
        self.repo.expect(work, _uetrs(msg), received)
        if not fresh and self.seen(work, msg, sender, sha):
            return False
        in_log = self.process(work, msg, sender, raw)
        self.store_inbound(work, msg, sender, sha, b"" if in_log else raw, processed=True)
        return True

    def seen(self, work: Work, msg: Message, sender: str, sha: str) -> bool:
        """Whether the message was received before (same bytes); DU01 for other bytes."""
        old = self.repo.inbox_sha(work, sender, msg.MESSAGE_ID, msg.id)
        if old is not None and old != sha:
            raise MessageRejected(
                "DU01", "message id already received with other content", msg_id=msg.id
            )
        return old is not None

    def store_inbound(
        self, work: Work, msg: Message, sender: str, sha: str, raw: bytes, *, processed: bool
    ) -> None:
        row = {
            "sender_bic": sender,
            "msg_def_id": msg.MESSAGE_ID,
            "msg_id": msg.id,
            "sha256": sha,
            "raw": raw,
            "received_at": now_ms(),
            "processed": processed,
        }
        self.repo.insert_inbox(work, row)

    def process(self, work: Work, msg: Message, sender: str, raw: bytes) -> bool:
        """Apply an inbound message in ``work``'s transaction; whether it concerned a PvP
        (then its bytes are in that PvP's message log, before what processing it produced:
        a decision after the ACSP that caused it, an answer after its question)."""
        at, caused_from = now_ms(), len(work.log)
        if isinstance(msg, Pacs002):
            touched = self.on_pacs002(work, msg, sender)
        elif isinstance(msg, Camt029):
            touched = self.on_camt029(work, msg, sender)
        elif isinstance(msg, Pacs028):
            touched = self.on_pacs028(work, msg, sender)
        elif isinstance(msg, Admi002):
            touched = self.on_admi002(work, msg, sender)
        else:
            log.warning("%s sent %s: not expected by the connector", sender, msg.MESSAGE_ID)
            touched = []
        if touched:
            entry = logged(touched, "in", sender, msg.MESSAGE_ID, msg.id, raw, at)
            work.log.insert(caused_from, entry)
        return bool(touched)

    def leg_by_uetr(self, work: Work, uetr: str) -> Found | None:
        """The leg of ``uetr`` with its PvP and decision, the PvP locked (one read on SQLite,
        whose writer lock serialises the writers already)."""
        return self.repo.find_leg(work, uetr)

    def on_pacs002(self, work: Work, msg: Pacs002, sender: str) -> list[str]:
        """A network's status of legs: ACSP (locked), ACSC (settled), RJCT."""
        touched: list[str] = []
        for st in msg.transactions:
            found = self.leg_by_uetr(work, st.original.uetr)
            if found is None:
                log.warning("pacs.002 for unknown UETR %s from %s", st.original.uetr, sender)
                continue
            touched.append(found.pvp.id)
            self.on_status(work, found, st)
        return touched

    def on_status(self, work: Work, found: Found, st: TransactionStatus) -> None:
        pvp, row, decision = found
        leg = row.as_leg()
        if st.status == "ACSP":
            if leg.status is LegStatus.INSTRUCTED:
                locked = leg.lock(now_ms())
                self.repo.update_leg(work, row, status=locked.status, locked_at=locked.locked_at)
                work.steps.append(Step("received_acsp", pvp.id))
            if decision is None:
                self.try_commit(work, pvp)
            elif decision.kind is DecisionKind.ABORT:
                # Locked after the abort (a late or re-sent pacs.009): cancel it again, and
                # wait for a new camt.029 even if an earlier one came.
                relocked = leg.lock_after_abort()
                self.repo.update_leg(
                    work, row, status=relocked.status, acknowledged=relocked.acknowledged
                )
                self.repo.update_pvp(work, pvp.id, PvPState.ABORTED)
                self.send_decisions(work, pvp, [row], DecisionKind.ABORT, decision.reason)
        elif st.status == "ACSC":
            if decision is None or not decision.is_commit:
                log.critical("PvP %s leg %s settled without COMMIT", pvp.id, leg.leg)
            settled = leg.settle()
            self.repo.update_leg(work, row, status=settled.status, acknowledged=True)
            self.repo.complete(work, pvp.id)
            work.steps.append(Step("acknowledged", pvp.id))
        elif st.status == "RJCT":
            if leg.status is LegStatus.INSTRUCTED:
                rejected = leg.reject(st.reason)
                self.repo.update_leg(work, row, status=rejected.status, reason=rejected.reason)
                if decision is None:
                    detail = f"leg {leg.leg} rejected by {row.network_bic}"
                    self.decide(work, pvp, DecisionKind.ABORT, st.reason or "NARR", detail)
            elif (
                decision is not None and decision.kind is DecisionKind.ABORT and st.reason == "DS02"
            ):
                released = leg.release_after_abort()
                self.repo.update_leg(work, row, status=released.status, acknowledged=True)
                self.repo.complete(work, pvp.id)
            else:
                log.error(
                    "PvP %s leg %s: RJCT %s in state %s", pvp.id, leg.leg, st.reason, leg.status
                )

    def on_camt029(self, work: Work, msg: Camt029, sender: str) -> list[str]:
        """A network's answer to a cancellation: released (CNCL) or refused (RJCR)."""
        touched: list[str] = []
        for res in msg.transactions:
            found = self.leg_by_uetr(work, res.original.uetr)
            if found is None:
                continue
            pvp, row = found.pvp, found.leg
            touched.append(pvp.id)
            answered = row.as_leg().cancellation_answered(refused=res.status == "RJCR")
            if answered.status is LegStatus.REFUSED:
                log.critical("PvP %s: %s refused the cancellation of %s", pvp.id, sender, row.leg)
            self.repo.update_leg(work, row, status=answered.status, acknowledged=True)
            self.repo.complete(work, pvp.id)
            work.steps.append(Step("acknowledged", pvp.id))
        return touched

    def on_pacs028(self, work: Work, msg: Pacs028, sender: str) -> list[str]:
        """A network asks for the status of legs: PDNG while undecided, else the decision
        (which it may not have had); past ``deadline - margin`` undecided, ABORT first."""
        answers: list[TransactionStatus] = []
        touched: list[str] = []
        for req in msg.transactions:
            found = self.leg_by_uetr(work, req.original.uetr)
            if found is None:
                unknown = TransactionStatus(
                    original=req.original,
                    status="RJCT",
                    reason="NARR",
                    additional_info="unknown UETR",
                )
                answers.append(unknown)
                continue
            pvp, leg, decision = found
            touched.append(pvp.id)
            if decision is None and pvp.as_pvp().past_margin(now_ms(), self.margin):
                detail = "deadline passed (asked by pacs.028)"
                self.decide(work, pvp, DecisionKind.ABORT, "TMOT", detail)
                decision = self.repo.read_decision(work, pvp.id)
            elif (
                decision is not None
                and decision.kind is DecisionKind.ABORT
                and not leg.acknowledged
            ):
                self.send_decisions(work, pvp, [leg], DecisionKind.ABORT, decision.reason)
            if decision is None:
                answers.append(TransactionStatus(original=original(leg), status="PDNG"))
            else:
                answers.append(decision_status(pvp, leg, decision.kind, decision.reason))
        reply = Pacs002(msg_id=new_id(), created=datetime.now(UTC), transactions=tuple(answers))
        self.enqueue(work, touched or [], sender, reply)
        return touched

    def on_admi002(self, work: Work, msg: Admi002, sender: str) -> list[str]:
        """A network refused one of our messages for good: logged with its PvP."""
        log.error(
            "%s rejected our message %s: %s %s",
            sender,
            msg.related_ref,
            msg.reason,
            msg.description,
        )
        pvp_id = self.repo.pvp_of_message(work, msg.related_ref)
        return [pvp_id] if pvp_id else []

    # --- the decision -------------------------------------------------------------------

    def try_commit(self, work: Work, pvp: PvPRow) -> None:
        """COMMIT if both legs are locked before ``deadline - margin``."""
        rows = self.repo.read_legs(work, pvp.id)
        now = now_ms()
        if pvp.as_pvp().may_commit([r.as_leg() for r in rows], now, self.margin):
            detail = "both legs locked in time"
            self.decide(work, pvp, DecisionKind.COMMIT, None, detail, rows, now)

    def abort_if_overdue(self, work: Work, pvp_id: str) -> bool:
        """ABORT (TMOT) a PvP still pending past ``deadline - margin``; whether it did."""
        row = self.repo.read_pvp(work, pvp_id, for_update=True)
        pvp = row.as_pvp()
        if pvp.state is not PvPState.PENDING or not pvp.past_margin(now_ms(), self.margin):
            return False
        self.decide(work, row, DecisionKind.ABORT, "TMOT", "deadline - margin passed")
        return True

    def decide(
        self,
        work: Work,
        pvp: PvPRow,
        decision: DecisionKind,
        reason: str | None,
        detail: str,
        leg_rows: Sequence[LegRow] | None = None,
        now: int | None = None,
    ) -> None:
        """Record THE decision and queue its delivery to every leg, in ``work``
        (``leg_rows``: the PvP's legs if the caller just read them in it; ``now``: when the
        caller found it due, the moment the commit rule was checked at)."""
        if self.repo.read_decision(work, pvp.id) is not None:
            return
        now = now_ms() if now is None else now
        current = pvp.as_pvp()
        if decision is DecisionKind.COMMIT:
            legs = [] if leg_rows is None else [r.as_leg() for r in leg_rows]
            decided, made = current.commit(legs, now, self.margin, detail[:300])
        else:
            decided, made = current.abort(reason or "NARR", detail[:300], now)
        self.repo.insert_decision(work, made)
        self.repo.update_pvp(work, pvp.id, decided.state)
        if leg_rows is None:
            leg_rows = self.repo.read_legs(work, pvp.id)
        self.send_decisions(work, pvp, leg_rows, decision, reason)
        log.info("PvP %s: %s (%s)", pvp.id, decision, detail)
        work.steps.insert(0, Step("decided", pvp.id))

    def redeliver_at(self, leg: LegRow, since: int | None = None) -> int:
        """Exponential backoff of re-sending a decision, from ``since`` (ms; default now): it
        does not pile up under backlog."""
        wait = self.cfg.redeliver_after_ms * 2 ** min(leg.redeliveries or 0, 16)
        return (now_ms() if since is None else since) + int(min(self.cfg.redeliver_cap_ms, wait))

    def send_decisions(
        self,
        work: Work,
        pvp: PvPRow,
        leg_rows: Sequence[LegRow],
        decision: DecisionKind,
        reason: str | None,
    ) -> None:
        """The decision to each of ``leg_rows``: one statement per table for them all."""
        batched = self.cfg.batch_max > 1
        updates: list[dict[str, Any]] = []
        outgoing: list[Outgoing] = []
        for leg in leg_rows:
            update = {
                "k_pvp": leg.pvp_id,
                "k_leg": leg.leg,
                "decision_sent_at": now_ms(),
                "redeliver_at": self.redeliver_at(leg),
            }
            if batched:
                # Grouped with other decisions to the same network by the batches' flush.
                update["decision_queued"] = True
            else:
                items = [(pvp, leg, reason)]
                msg = decision_message(self.bic, leg.network_bic, decision, items)
                outgoing.append(self.outbox.outgoing([pvp.id], leg.network_bic, msg))
            updates.append(update)
        self.write_outgoing(work, outgoing)
        if updates:
            self.repo.update_legs(work, updates)

    def redeliver(self, work: Work, pvp_id: str, leg_name: str) -> None:
        """Send a decision a network has not acknowledged again, unless it is not even sent
        yet, or was delivered less than a period ago (count from the delivery). The PvP is
        locked first (PostgreSQL), as by every other writer of its legs: its legs written
        before, a message's transaction holding the PvP and waiting for them deadlocked with
        this one (the message was taken again)."""
        pvp = self.repo.read_pvp(work, pvp_id, for_update=True)
        leg = self.repo.read_leg(work, pvp_id, leg_name)
        delivery = self.repo.delivery_state(work, pvp_id, leg.network_bic)
        decision = self.repo.read_decision(work, pvp_id)
        if leg.acknowledged or decision is None:
            return
        if delivery.unsent or leg.decision_queued:
            # Not even sent yet (a backlog): wait another period, no new message.
            self.repo.update_leg(
                work, leg, decision_sent_at=now_ms(), redeliver_at=self.redeliver_at(leg)
            )
            return
        delivered = delivery.last_sent_at
        if delivered is not None and now_ms() < delivered + self.cfg.redeliver_after_ms:
            # Delivered (202: stored by the receiver) less than a period ago: its answer may
            # still be queued behind a backlog over there. Re-sending now only adds to that
            # backlog (every copy is answered again): count the period from the delivery.
            self.repo.update_leg(work, leg, redeliver_at=self.redeliver_at(leg, since=delivered))
            return
        log.info("PvP %s: re-sending %s to %s", pvp_id, decision.kind, leg.network_bic)
        self.repo.update_leg(work, leg, redeliveries=leg.redeliveries + 1)
        leg = self.repo.read_leg(work, pvp_id, leg_name)
        self.send_decisions(work, pvp, [leg], decision.kind, decision.reason)


def _uetrs(msg: Message) -> list[str]:
    """The legs an inbound message names (those its handler looks up)."""
    if isinstance(msg, Pacs002 | Camt029 | Pacs028):
        return [tx.original.uetr for tx in msg.transactions]
    return []


__all__ = ["Found", "Handlers"]
