"""Delivery of an outbox, the one engine of both parties: the gateway's dispatchers (PvP
messages, webhooks) and the connector's lanes.

What is a party's own comes in through small interfaces (:mod:`gateway.messaging.parties`,
with the vocabulary they share):

- :class:`OutboxRows`: how its rows are claimed, made due again and recorded as sent (the
  gateway: a lease written in the row, ``FOR UPDATE SKIP LOCKED`` among replicas; the
  connector: an in-flight set in memory, one process per database);
- :class:`Transmitter`: how one row is transmitted (an HTTP post per topic, a webhook; the
  connector's post or simulated bank's turn, with its fault rules around it), and
  :class:`InProcess` where a destination is served in this process, its rows delivered
  several to a transaction;
- :class:`Rounds`: a party's own work in the dispatcher's rounds (the connector's batches,
  its crash steps and held rows).

Written once, here:

- lanes per destination (:mod:`gateway.messaging.lanes`), a slow destination holding up its
  own rows only;
- the hand-out after a commit (:meth:`DeliveryEngine.hand_out`), from the committing thread:
  rows it claimed in its transaction, or looked up by their ids, go to their lanes, or, a
  pair whose lanes are idle, are kept and delivered on that thread
  (:meth:`DeliveryEngine.deliver_here`): a lane thread woken per message cost more CPU than
  the delivery;
- the outcome of a delivery: ``sent``, ``retry`` (due again: after the backoff, or as a
  :class:`Retry` says) or ``held`` (kept back by the transmitter, which lets it go later);
- the record of deliveries: ``sent_at`` written several in one transaction, at most
  :attr:`Recording.within` seconds late or once :attr:`Recording.most` wait; meanwhile a row
  stays claimed, so it is not handed out again, and a crash only means it is sent again
  (receivers deduplicate);
- the dispatcher's loop (:meth:`DeliveryEngine.start`): it records what is due, runs the
  party's round, and looks for due rows only when told some may be (:meth:`wake`), after a
  retry, or at its poll;
- a :data:`Watcher` (:meth:`DeliveryEngine.watch`): how tests see who delivered what, without
  replacing any of it.

Deliveries are recorded by the dispatcher thread while it runs: a delivery wakes it only when
it would not look soon by itself (a wake-up per delivery cost a thread switch per message).
Without one (an engine driven from outside: a scheduled job, a test), the thread that reports
a delivery records it, once due.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple

from gateway.messaging.lanes import Lane, Lanes, LaneSettings
from gateway.messaging.parties import (
    B,
    Backoff,
    InProcess,
    OutboxRows,
    Outcome,
    R,
    Recording,
    Retry,
    Rounds,
    Row,
    Sent,
    Transmitter,
    Watcher,
)
from gateway.messaging.queues import take_queued
from gateway.threads import start_thread

log = logging.getLogger(__name__)

_AT_ONCE = Recording()
_BACKOFF = Backoff()

IN_PROCESS_BATCH = 32
"""Most deliveries to an in-process destination that one lane thread makes in one transaction."""


class _Report(NamedTuple):
    row: Any
    outcome: Outcome
    at: Any


class _Unrecorded(Generic[R]):
    """Deliveries waiting to be recorded, and when the oldest came."""

    def __init__(self, policy: Recording, monotonic: Callable[[], float]) -> None:
        self.policy = policy
        self.monotonic = monotonic
        self._sent: list[Sent[R]] = []
        self._since = 0.0
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._sent)

    def add(self, sent: list[Sent[R]], *, flush: bool) -> list[Sent[R]]:
        """Add ``sent``; every delivery waiting, if their recording is due (or ``flush``)."""
        now = self.monotonic()
        with self._lock:
            if sent and not self._sent:
                self._since = now
            self._sent += sent
            most = self.policy.most
            if self._sent and (
                flush
                or now - self._since >= self.policy.within
                or (most is not None and len(self._sent) >= most)
            ):
                due, self._sent = self._sent, []
                return due
        return []


class DeliveryEngine(Generic[R, B]):
    """Lanes, the dispatcher and the record of deliveries over one party's outbox (see the
    module docstring). Lanes start on first use; :meth:`start` runs the dispatcher."""

    def __init__(
        self,
        name: str,
        rows: OutboxRows[R, B],
        transmitter: Transmitter[R, B],
        *,
        lanes: LaneSettings,
        recording: Recording = _AT_ONCE,
        backoff: Backoff = _BACKOFF,
        poll: float = 0.2,
        in_process: InProcess[B] | None = None,
        rounds: Rounds[R] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rows = rows
        self.transmitter = transmitter
        self.recording = recording
        self.backoff = backoff
        self.poll = poll
        self.in_process = in_process
        self.rounds = rounds
        self.lanes: Lanes[R] = Lanes(name, lanes, self._lane_loop)
        self._done: queue.SimpleQueue[_Report] = queue.SimpleQueue()
        self._unrecorded: _Unrecorded[R] = _Unrecorded(recording, monotonic)
        self._wake = threading.Event()
        # Set when rows may be due (a commit queued some, a retry, more than a round took):
        # the dispatcher looks for due rows only then, or at its poll, not at every wake-up.
        self._due = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self._watchers: list[Watcher] = []

    # --- watching and lifecycle -------------------------------------------------------------

    def watch(self, watcher: Watcher) -> None:
        """Tell ``watcher`` what delivery does from now on (see :data:`Watcher`)."""
        self._watchers.append(watcher)

    def _tell(self, event: str, rows: Sequence[Any], detail: str) -> None:
        for watcher in self._watchers:
            watcher(event, rows, detail)

    @property
    def running(self) -> bool:
        """Whether the dispatcher thread runs (and records deliveries)."""
        return self._running

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_stop(self, seconds: float) -> bool:
        return self._stop.wait(seconds)

    def start(self, thread_name: str) -> threading.Thread:
        """Run the dispatcher on a thread called ``thread_name``."""
        self._stop.clear()
        self._running = True
        self._thread = start_thread(self._loop, thread_name)
        self._wake.set()
        return self._thread

    def stop(self) -> None:
        """Have the dispatcher record what waits and end (its thread is joined by
        :meth:`join`); lanes go on until :meth:`stop_lanes`."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float = 10) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop_lanes(self) -> None:
        """Stop the lanes once they have delivered what is queued, and record what they
        delivered (lost, it would only be sent again)."""
        self.lanes.stop()
        try:
            self.record(force=True)
        except Exception:
            log.exception("%s: recording the last deliveries failed", self.name)

    def wake(self, *, due: bool = True) -> None:
        """Wake the dispatcher; ``due``: rows may be due (a commit queued some), so it looks."""
        if due:
            self._due = True
        self._wake.set()

    # --- handing out ------------------------------------------------------------------------

    def dispatch(self) -> int:
        """Claim due rows and hand them to their lanes; how many."""
        rows, more = self.rows.claim_due()
        return self.hand_out(rows, more=more)

    def hand_out(
        self, rows: Sequence[R], *, more: bool = False, keep: list[R] | None = None
    ) -> int:
        """Hand rows this thread holds (claimed) to their lanes; returns how many. With
        ``keep``, if there are at most two (a PvP's pair) and their lanes are idle, they are
        put in ``keep`` instead, for the caller to deliver (:meth:`deliver_here`). ``more``:
        more rows may be due than were claimed, for the dispatcher to look for."""
        lanes = [self.lanes.get(self.rows.lane_of(row)) for row in rows]
        kept = keep is not None and len(rows) <= 2 and all(lane.idle() for lane in lanes)
        if not kept:
            for row, lane in zip(rows, lanes, strict=True):
                self.lanes.put(lane, row)
        if more:
            self.wake()
        if rows and self._watchers:
            self._tell("handed_out", rows, "here" if kept else "lanes")
        if kept and keep is not None:
            keep.extend(rows)
        return len(rows)

    def deliver_here(self, rows: Sequence[R]) -> int:
        """Deliver rows this thread holds on this thread, as a lane would, and report them;
        how many were sent. Rows to remote destinations go first (a post waits for the
        answer; an in-process destination's turn is CPU)."""
        if self.in_process is not None:
            local = self.in_process.in_process
            rows = sorted(rows, key=lambda row: local(self.rows.lane_of(row)))
        outcomes = [
            (row, self._deliver(row, self.lanes.get(self.rows.lane_of(row)))) for row in rows
        ]
        self.report(outcomes)
        return sum(outcome == "sent" for _, outcome in outcomes)

    # --- delivering -------------------------------------------------------------------------

    def _lane_loop(self, lane: Lane[R]) -> None:
        local = self.in_process is not None and self.in_process.in_process(lane.dest)
        while True:
            row = self.lanes.take(lane)
            if row is None:
                return
            # An in-process destination's lane takes every row already queued into one
            # transaction (a transaction per delivery otherwise); a remote one, one at a time.
            rows, stop = take_queued(lane.queue, row, IN_PROCESS_BATCH if local else 1)
            batch: B | None = None
            if len(rows) == 1:
                outcomes = [(row, self._deliver(row, lane))]
            else:
                outcomes, batch = self._deliver_batch(rows, lane)
            self.report(outcomes)
            if self.in_process is not None:
                self.in_process.after(batch)
            if stop:
                return

    def _deliver_batch(
        self, rows: list[R], lane: Lane[R]
    ) -> tuple[list[tuple[R, Outcome]], B | None]:
        """Deliver rows in one transaction, each exactly as alone, each in a savepoint of it:
        the outcomes, and the batch once committed. If the transaction fails, none is
        delivered: all are due again at once."""
        assert self.in_process is not None
        if self._watchers:
            self._tell("batch", rows, lane.dest)
        outcomes: list[tuple[R, Outcome]] = []
        try:
            with self.in_process.batch() as batch:
                for row in rows:
                    outcomes.append((row, self._deliver(row, lane, batch)))
        except Exception:
            log.exception("%s: a batch of %d deliveries failed; due again", self.name, len(rows))
            return [(row, "retry") for row in rows], None
        return outcomes, batch

    def _deliver(self, row: R, lane: Lane[R], batch: B | None = None) -> Outcome:
        """Transmit one row: its outcome. A failed attempt is due again after the backoff."""
        try:
            try:
                outcome = self.transmitter.transmit(row, lane, batch)
            except Retry as again:
                if again.after is None:
                    attempts = row.attempts + 1
                    self.rows.reschedule(
                        row, self.backoff.after(attempts), attempts, str(again), batch
                    )
                else:
                    self.rows.reschedule(row, again.after, row.attempts, str(again), batch)
                outcome = "retry"
            except Exception as exc:  # any failure of the far side: retried with backoff
                attempts = row.attempts + 1
                label = self.rows.label(row)
                log.warning("%s outbox %s attempt %d failed: %s", self.name, label, attempts, exc)
                self.rows.reschedule(row, self.backoff.after(attempts), attempts, str(exc), batch)
                outcome = "retry"
        except Exception:  # not even rescheduled: due again once no longer held
            log.exception("%s outbox %s: delivery failed", self.name, self.rows.label(row))
            outcome = "retry"
        if self._watchers:
            self._tell("delivered", [row], outcome)
        return outcome

    # --- recording --------------------------------------------------------------------------

    def report(self, outcomes: Sequence[tuple[R, Outcome]]) -> None:
        """Outcomes of deliveries, to be recorded. The dispatcher, while it runs, is woken
        only when it would not look soon by itself: for a row to hand out again (a retry, a
        held one), or while no recording is due (it then sleeps up to its poll). Without a
        dispatcher, this thread records them once due."""
        at = self.rows.now()
        for row, outcome in outcomes:
            self._done.put(_Report(row, outcome, at))
        if not self._running:
            self.record()
            return
        # While deliveries wait to be recorded, it sleeps at most Recording.within.
        if not self._unrecorded or any(outcome != "sent" for _, outcome in outcomes):
            self._wake.set()

    def record(self, *, force: bool = False) -> int:
        """Take the outcomes reported; record deliveries once due (see :class:`Recording`), or
        all waiting when ``force``d; let go of rows due again. Until recorded a row stays
        held, so it is not handed out again. Returns how many were recorded."""
        done: list[_Report] = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        delivered = [d for d in done if d.outcome == "sent"]
        sent = self._unrecorded.add([Sent(d.row, d.at) for d in delivered], flush=force)
        if sent:
            self.rows.record_sent(sent)
        again: list[R] = [d.row for d in done if d.outcome == "retry"]
        if self.rounds is not None:
            again += self.rounds.recorded([s.row for s in sent], [d.row for d in delivered])
        if again:
            self.rows.release(again)
            self._due = True
        return len(sent)

    # --- the dispatcher ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            linger = self.rounds.linger() if self.rounds is not None else None
            waiting = bool(self._unrecorded) and self.recording.within > 0
            idle = self.recording.within if waiting else self.poll
            woken = self._wake.wait(timeout=idle if linger is None else linger)
            self._wake.clear()
            try:
                self.record(force=not woken)
                made = self.rounds.prepare() if self.rounds is not None else 0
                # Cleared before the look, and only when seen set: a commit that set it
                # meanwhile is visible to the look, or sets it again for the next round.
                if self._due or made or not woken:
                    self._due = False
                    self.dispatch()
            except Exception:
                log.exception("%s: a dispatcher round failed; retrying", self.name)
                self._stop.wait(0.2)
        self._running = False  # what is reported from now on, its reporter records
        try:
            self.record(force=True)
        except Exception:  # sent again after a restart: receivers deduplicate
            log.exception("%s: recording the last deliveries failed", self.name)


__all__ = [
    "IN_PROCESS_BATCH",
    "Backoff",
    "DeliveryEngine",
    "InProcess",
    "Lane",
    "LaneSettings",
    "OutboxRows",
    "Outcome",
    "Recording",
    "Retry",
    "Rounds",
    "Row",
    "Sent",
    "Transmitter",
    "Watcher",
]
