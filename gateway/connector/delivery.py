"""Delivery of the outbox: lanes per network, backoff, transmission, and the record of what
was sent.

A thread that committed outbox rows hands them to the lanes of their destination networks
itself (:meth:`Delivery.committed`), or, a reception or request thread after its answers,
delivers a pair itself when their lanes are idle (``deliver_here``); the *dispatcher* thread
picks due rows after a failed delivery, in batched mode, and at its poll. A lane has
``senders_per_network`` threads and its own pooled HTTP client; a simulated bank's lane runs
the bank's handling and the connector's processing of its answers. Lanes report back to the
dispatcher, which marks every row delivered since its last round sent in one transaction
(then fires the fault steps of delivery). Faults (drop, delay, duplicate, reorder) apply here.

A :data:`Watcher` (:meth:`Delivery.watch`) is told what delivery does, on the thread doing it:
how tests see who delivered what without replacing any of it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.connector import batches, store
from gateway.connector.faults import Faults, fire_steps
from gateway.connector.handlers import Handlers
from gateway.connector.messages import CAMT056, PACS002, PACS009
from gateway.connector.outbox import Outbox, Work, transaction
from gateway.connector.registry import Registry
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms
from gateway.faults import crash_point
from gateway.iso20022 import Message
from gateway.messaging.posting import Poster
from gateway.messaging.queues import take_queued
from gateway.sqlite.fastsql import run
from gateway.sqlite.walsync import NO_SYNC
from gateway.threads import start_thread

log = logging.getLogger(__name__)

_SIM_BATCH = 32
"""Most deliveries to a simulated bank that one lane thread makes in one transaction."""
_RECORD_WITHIN = 0.05
"""Deliveries are recorded (``sent_at``) at most this many seconds late, several in one
transaction, or once this many wait:"""
_RECORD_MAX = 256

Watcher = Callable[[str, Sequence[Any], str], None]
"""Called ``(event, rows, detail)`` on the thread of the event: ``handed_out`` (outbox rows
found due and handed to their lanes, ``detail`` ``lanes``, or kept by the thread to deliver
itself, ``here``), ``batch`` (rows a simulated bank's lane delivers in one transaction,
``detail`` the lane), ``delivered`` (one row; ``detail`` its outcome: ``sent``, ``retry`` or
``held``; in a batch, as its own delivery ended: the batch's transaction may yet fail)."""


@dataclass(slots=True)
class Lane:
    """Delivery to one network: a queue of outbox rows, its threads, its HTTP client."""

    dest: str
    queue: queue.SimpleQueue[Any]
    http: Poster
    threads: list[threading.Thread] = field(default_factory=list)


class Delivery:
    """The lanes and the dispatcher. ``start`` runs the dispatcher; lanes start on first use."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        registry: Registry,
        sim: SimulatedNetworks,
        outbox: Outbox,
        handlers: Handlers,
        faults: Faults,
    ) -> None:
        self.settings = settings
        self.cfg = settings.connector
        self.engine = engine
        self.registry = registry
        self.sim = sim
        self.outbox = outbox
        self.handlers = handlers
        self.faults = faults
        self.running = False
        self._wake = threading.Event()
        # Set (after their commit) by transactions that queued outbox rows: the dispatcher
        # looks for due rows only then, or every poll (retries), not at each wake-up.
        self._fresh = True
        self._stop = threading.Event()
        self._lanes: dict[str, Lane] = {}
        self._done: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()
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
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        """Tell ``watcher`` what delivery does from now on (see :data:`Watcher`)."""
        self._watchers.append(watcher)

    def _tell(self, event: str, rows: Sequence[Any], detail: str) -> None:
        for watcher in self._watchers:
            watcher(event, rows, detail)

    def start_dispatcher(self) -> threading.Thread:
        self.running = True
        thread = start_thread(self._dispatch_loop, "connector-dispatcher")
        self._wake.set()
        return thread

    def stop(self) -> None:
        """Stop the dispatcher (its thread is joined by the caller) and the lanes."""
        self._stop.set()
        self._wake.set()

    def stop_lanes(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            for _ in lane.threads:
                lane.queue.put(None)
        for lane in lanes:
            for t in lane.threads:
                t.join(timeout=10)
            lane.http.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_stop(self, seconds: float) -> bool:
        return self._stop.wait(seconds)

    # --- after a commit ---------------------------------------------------------------------

    def committed(self, sent: list[str], *, deliver_here: bool = False) -> None:
        """After a commit that wrote the outbox rows ``sent`` (or a delivery). Unbatched, hand
        them to their lanes from this thread: through the dispatcher, it cost a wake-up of that
        thread and a thread switch on the way of every pacs.009 and every decision. When the
        dispatcher runs batches, wake it: it looks for due rows, and queued legs and
        decisions. Unbatched, a commit that queued nothing leaves it asleep (deliveries report
        themselves: :meth:`_report`). ``deliver_here``: see :meth:`_hand_out`."""
        if sent:
            if self.cfg.batch_max <= 1 and self.running and not self._stop.is_set():
                self._hand_out(sent, deliver_here)
                return
            self._fresh = True
        elif self.cfg.batch_max <= 1:
            return
        self._wake.set()

    def poke(self) -> None:
        """Have the dispatcher look for due rows now (a held row may be due)."""
        self._wake.set()

    @property
    def held_since(self) -> int | None:
        held = self._held
        return None if held is None else held[1]

    def _hand_out(self, msg_ids: list[str], deliver_here: bool = False) -> None:
        """Hand the outbox rows this thread's commits wrote (``msg_ids``) to their lanes, from
        this thread, once those commits are durable; with ``deliver_here``, a PvP's pair is
        delivered by this thread if their lanes are idle. Only this thread's rows: looking for
        every due row, the read had to wait for whatever other writer was between its COMMIT
        and its fsync (the rows it could see), a whole fsync more on the way of a pacs.009 or
        a decision about every other time under load. Theirs are handed out by them."""
        here: list[Any] = []
        try:
            self.dispatch_due(here if deliver_here else None, msg_ids=msg_ids)
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
            outcomes.append((row, self._deliver_logged(row, lane)))
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

    # --- the dispatcher ---------------------------------------------------------------------

    def flush_batches(self, *, force: bool = False) -> int:
        """Batched mode: queued legs and decisions -> their messages (:mod:`batches`), found
        by the next round of due rows. Returns messages made."""
        if self.cfg.batch_max <= 1:
            return 0
        with transaction(self.engine) as work:
            made, self._queued_left = batches.flush(self.cfg, self.handlers, work, force=force)
        return made

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
                    self.dispatch_due()
            except Exception:
                log.exception("connector dispatcher failed; retrying")
                self._stop.wait(0.2)
        try:
            self._finish_delivered(force=True)
        except Exception:  # sent again after a restart: receivers deduplicate
            log.exception("connector: recording the last deliveries failed")

    def dispatch_due(
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
        if rows and self._watchers:
            self._tell("handed_out", rows, "here" if kept else "lanes")
        if kept and keep is not None:
            keep.extend(rows)
        return len(rows)

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
                records = [{"k_id": r.id, "sent_at": at, "attempts": r.attempts + 1} for r in sent]
                run(conn, store.UPDATE_OUTBOX, records)
        with self._flight:
            for row, outcome in done:
                if outcome == "retry":  # due again, now or after its backoff
                    self._inflight.discard(row.id)
                    self._fresh = True
            for row in sent:
                self._inflight.discard(row.id)
        for row in sent:
            step = "sent_pacs009" if row.msg_def_id == PACS009 else "sent_decision"
            if row.msg_def_id in (PACS009, PACS002, CAMT056):
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

    # --- the lanes --------------------------------------------------------------------------

    def _lane(self, dest: str) -> Lane:
        lane = self._lanes.get(dest)
        if lane is None:
            n = max(1, self.cfg.senders_per_network)
            lane = Lane(
                dest,
                queue.SimpleQueue(),
                Poster(timeout=self.cfg.http_timeout_seconds, max_connections=n),
            )
            self._lanes[dest] = lane
            for i in range(n):
                name = f"connector-send-{dest}-{i}"
                lane.threads.append(start_thread(self._lane_loop, name, args=(lane,)))
        return lane

    def _lane_loop(self, lane: Lane) -> None:
        simulated = lane.dest in self.sim.by_bic
        while True:
            row = lane.queue.get()
            if row is None:
                return
            # A simulated bank's lane takes every row already queued into one transaction.
            rows, stop = take_queued(lane.queue, row, _SIM_BATCH if simulated else 1)
            sent: list[str] = []
            if len(rows) == 1:
                outcomes = [(row, self._deliver_logged(row, lane))]
            else:
                outcomes, sent = self._deliver_batch(rows, lane)
            self._report(outcomes)
            self.committed(sent)
            if stop:
                return

    def _deliver_logged(self, row: Any, lane: Lane, batch: Work | None = None) -> str:
        try:
            outcome = self.deliver(row, lane, batch)
        except Exception:
            log.exception("delivery of outbox row %s failed", row.id)
            outcome = "retry"
        if self._watchers:
            self._tell("delivered", [row], outcome)
        return outcome

    def _deliver_batch(
        self, rows: list[Any], lane: Lane
    ) -> tuple[list[tuple[Any, str]], list[str]]:
        """Deliver rows to a simulated bank in one transaction, each exactly as
        :meth:`deliver` would (faults included), each in a savepoint of it: the outcomes, and
        the outbox rows the batch wrote. If the transaction fails, none is delivered: all are
        handed out again."""
        outcomes: list[tuple[Any, str]] = []
        if self._watchers:
            self._tell("batch", rows, lane.dest)
        try:
            with transaction(self.engine) as batch:
                for row in rows:
                    outcomes.append((row, self._deliver_logged(row, lane, batch)))
        except Exception:
            log.exception("a batch of %d deliveries failed; they are handed out again", len(rows))
            return [(row, "retry") for row in rows], []
        fire_steps(self.faults, self.settings.faults, batch.steps)
        return outcomes, batch.sent

    def deliver(self, row: Any, lane: Lane, batch: Work | None = None) -> str:
        """Deliver one row, faults applied: ``sent``, ``retry`` (rescheduled) or ``held``.
        ``batch``: the lane's open transaction, whose savepoints its writes go in."""
        f = self.faults
        kw = {
            "pvp_id": row.pvp_id,
            "message_type": row.msg_def_id,
            "destination_bic": row.destination_bic,
        }
        if row.id not in self._delayed and (rule := f.fire("delay", **kw)) is not None:
            self._delayed.add(row.id)
            self._reschedule(row, rule.delay_ms, row.attempts, "fault: delay", batch)
            return "retry"
        with self._held_lock:
            if self._held is None and f.fire("reorder", **kw) is not None:
                self._held = (row, now_ms())
                return "held"
        if f.fire("drop", **kw) is not None:
            attempts = row.attempts + 1
            self._reschedule(row, self._backoff(attempts), attempts, "fault: drop", batch)
            return "retry"
        copies = 2 if f.fire("duplicate", **kw) is not None else 1
        try:
            for _ in range(copies):
                self._transmit(row, lane, batch)
        except Exception as exc:
            log.warning("delivery of %s %s failed: %s", row.msg_def_id, row.msg_id, exc)
            attempts = row.attempts + 1
            self._reschedule(row, self._backoff(attempts), attempts, str(exc), batch)
            return "retry"
        self._delayed.discard(row.id)
        return "sent"

    def _backoff(self, attempts: int) -> int:
        return int(min(self.cfg.retry_cap_ms, self.cfg.retry_base_ms * 2 ** max(0, attempts - 1)))

    def _reschedule(
        self, row: Any, delay_ms: int, attempts: int, error: str, batch: Work | None
    ) -> None:
        with transaction(self.engine, batch) as work:
            again = {
                "k_id": row.id,
                "available_at": now_ms() + delay_ms,
                "attempts": attempts,
                "last_error": error[:500],
            }
            run(work.conn, store.UPDATE_OUTBOX, again)

    def _transmit(self, row: Any, lane: Lane, batch: Work | None) -> None:
        net = self.registry.network(row.destination_bic)
        if net is None:
            raise RuntimeError(f"no network registered for {row.destination_bic}")
        if net.endpoint is None:
            built = self.outbox.take_built(row.msg_id)
            self._deliver_simulated(row.payload, net.bic, built, batch)
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

    def _deliver_simulated(
        self, raw: bytes, bic: str, built: Message | None, batch: Work | None
    ) -> None:
        """The simulated bank handles the message and the connector processes its answers in
        one transaction: all of it happens, or none (and the row is delivered again). Both
        ways messages go typed with their envelopes (``built``: the message ``raw`` was built
        from): in process, and checked against the schema when they were built, so they are
        not parsed back. Inside a batch, what it produced is the batch's, acted on once the
        batch has committed."""
        with transaction(self.engine, batch) as work:
            self.handlers.simulated_turn(work, raw, bic, built)
        if batch is None:
            fire_steps(self.faults, self.settings.faults, work.steps)
            self.committed(work.sent)


__all__ = ["Delivery", "Lane"]
