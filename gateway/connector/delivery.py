"""The connector's delivery, on the engine both parties share
(:mod:`gateway.messaging.delivery`: lanes, hand-out, recording, the dispatcher's loop). What is
the connector's own:

- :class:`InFlight`, how its outbox rows are claimed and recorded: one process per database,
  so a row handed to a lane is held in memory (the in-flight set) until its delivery is
  recorded; times are milliseconds;
- :class:`Transmission`, how one row is transmitted: posted to the network's endpoint, or
  a simulated bank's turn in this process (its lane delivers what is queued in one
  transaction), with the fault rules (drop, delay, duplicate, reorder) applied around it;
- :class:`Delivery`, which wires them to the engine: after a commit, the committing thread
  hands its rows to the lanes itself (:meth:`Delivery.committed`), or, a reception or request
  thread after its answers, delivers a pair itself when their lanes are idle; the dispatcher
  runs batches, records deliveries (then fires the fault steps of delivery) and looks for due
  rows after a failed delivery and at its poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.connector import batches, pgrepo, store
from gateway.connector.faults import Faults, fire_steps
from gateway.connector.handlers import Handlers
from gateway.connector.messages import CAMT056, PACS002, PACS009
from gateway.connector.outbox import Outbox, OutboxRow, Work, outbox_row, transaction
from gateway.connector.registry import Registry
from gateway.connector.sim import SimulatedNetworks
from gateway.connector.store import now_ms
from gateway.faults import crash_point
from gateway.iso20022 import Message
from gateway.messaging.delivery import (
    Backoff,
    DeliveryEngine,
    Lane,
    LaneSettings,
    Outcome,
    Recording,
    Retry,
    Sent,
    Watcher,
)
from gateway.sqlite.fastsql import run
from gateway.sqlite.walsync import NO_SYNC

log = logging.getLogger(__name__)

_RECORDING = Recording(within=0.05, most=256)
"""Deliveries are recorded (``sent_at``) at most 50 ms late, several in one transaction, or
once 256 wait."""
_MAX_IN_FLIGHT = 1024


class InFlight:
    """The connector's outbox rows, held in memory while handed out (the in-flight set)."""

    def __init__(self, engine: Engine, max_in_flight: int = _MAX_IN_FLIGHT) -> None:
        self.engine = engine
        self.max_in_flight = max_in_flight
        self.ids: set[int] = set()
        # Makes a claim (the look, then the rows marked) one step: claims run on the
        # dispatcher and on threads that have just committed rows.
        self._lock = threading.Lock()

    def claim_due(self) -> tuple[list[OutboxRow], bool]:
        """Due rows not in flight, now in flight, as many as there is room for."""
        with self._lock:
            room = self.max_in_flight - len(self.ids)
            if room <= 0:
                return [], False
            # (0, no row's id, keeps the IN list from being empty: fastsql's plan, not
            # SQLAlchemy's rendering of an empty set)
            now, busy = now_ms(), [0, *self.ids]
            params = {"now": now, "busy": busy, "limit": room}
            with store.reader(self.engine) as conn:
                if conn.dialect.name != "sqlite":
                    rows = pgrepo.due_outbox(conn, now, busy, room)
                else:
                    rows = [outbox_row(r) for r in run(conn, store.SELECT_DUE_OUTBOX, params)]
            self.ids.update(row.id for row in rows)
        return rows, len(rows) == room

    def claim_own(self, msg_ids: list[str]) -> tuple[list[OutboxRow], bool]:
        """The rows the calling thread's commits wrote (``msg_ids``), once those commits are
        durable: the read need not wait for other writers' fsyncs (``store.reader``'s
        ``own_rows``). A row whose savepoint was rolled back is not found; one not claimed
        for want of room is left to the dispatcher (more: True)."""
        with self._lock:
            room = self.max_in_flight - len(self.ids)
            if room <= 0:
                return [], True
            now = now_ms()
            own = {"msg_ids": msg_ids, "now": now}
            with store.reader(self.engine, own_rows=True) as conn:
                if conn.dialect.name != "sqlite":
                    found = pgrepo.unsent_outbox(conn, msg_ids, now)
                else:
                    select = store.SELECT_UNSENT_OUTBOX_BY_MSG_IDS
                    found = [outbox_row(r) for r in run(conn, select, own)]
            found = [row for row in found if row.id not in self.ids]
            rows = found[:room]
            self.ids.update(row.id for row in rows)
        return rows, len(found) > room

    def release(self, rows: Sequence[OutboxRow]) -> None:
        with self._lock:
            self.ids.difference_update(row.id for row in rows)

    def record_sent(self, sent: Sequence[Sent[OutboxRow]]) -> None:
        records = [
            {"k_id": s.row.id, "sent_at": s.at, "attempts": s.row.attempts + 1} for s in sent
        ]
        with self.engine.begin() as conn:
            # Lost in a crash, they are sent again: the commit need not wait for an fsync.
            conn.execution_options(**{NO_SYNC: True})
            if conn.dialect.name != "sqlite":
                pgrepo.record_sent(
                    conn, [(r["k_id"], r["sent_at"], r["attempts"]) for r in records]
                )
            else:
                run(conn, store.UPDATE_OUTBOX, records)
        self.release([s.row for s in sent])

    def reschedule(
        self, row: OutboxRow, delay: float, attempts: int, error: str, batch: Work | None
    ) -> None:
        with transaction(self.engine, batch) as work:
            again = {
                "k_id": row.id,
                "available_at": now_ms() + round(delay * 1000),
                "attempts": attempts,
                "last_error": error[:500],
            }
            run(work.conn, store.UPDATE_OUTBOX, again)

    def lane_of(self, row: OutboxRow) -> str:
        return row.destination_bic

    def label(self, row: OutboxRow) -> str:
        return f"{row.msg_def_id} {row.msg_id}"

    def now(self) -> int:
        return now_ms()


class Transmission:
    """Transmits one row, fault rules applied; a simulated bank's lane delivers its queued rows
    in one transaction (:meth:`batch`)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        registry: Registry,
        sim: SimulatedNetworks,
        outbox: Outbox,
        handlers: Handlers,
        faults: Faults,
        delivery: Delivery,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = registry
        self.sim = sim
        self.outbox = outbox
        self.handlers = handlers
        self.faults = faults
        self.delivery = delivery
        self._delayed: set[int] = set()
        self.held_lock = threading.Lock()
        self.held: tuple[OutboxRow, int] | None = None  # a reordered row and when it was held

    def transmit(self, row: OutboxRow, lane: Lane[OutboxRow], batch: Work | None) -> Outcome:
        """Deliver one row, faults applied: ``sent`` or ``held``, or raises :class:`Retry`.
        ``batch``: the lane's open transaction, whose savepoints its writes go in."""
        f = self.faults
        kw = {
            "pvp_id": row.pvp_id,
            "message_type": row.msg_def_id,
            "destination_bic": row.destination_bic,
        }
        if row.id not in self._delayed and (rule := f.fire("delay", **kw)) is not None:
            self._delayed.add(row.id)
            raise Retry("fault: delay", after=rule.delay_ms / 1000)
        with self.held_lock:
            if self.held is None and f.fire("reorder", **kw) is not None:
                self.held = (row, now_ms())
                return "held"
        if f.fire("drop", **kw) is not None:
            raise Retry("fault: drop")
        copies = 2 if f.fire("duplicate", **kw) is not None else 1
        for _ in range(copies):
            self._transmit(row, lane, batch)
        self._delayed.discard(row.id)
        return "sent"

    def _transmit(self, row: OutboxRow, lane: Lane[OutboxRow], batch: Work | None) -> None:
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
            self.delivery.committed(work.sent)

    # --- simulated banks: in process --------------------------------------------------------

    def in_process(self, dest: str) -> bool:
        return dest in self.sim.by_bic

    @contextmanager
    def batch(self) -> Iterator[Work]:
        with transaction(self.engine) as work:
            yield work

    def after(self, batch: Work | None) -> None:
        """Once a lane's deliveries are reported: the fault steps its batch reached, and the
        outbox rows it wrote handed out (in batched mode, the dispatcher woken)."""
        if batch is not None:
            fire_steps(self.faults, self.settings.faults, batch.steps)
        self.delivery.committed(batch.sent if batch is not None else [])


class Delivery:
    """The connector's outbox on the delivery engine: :attr:`engine`'s lanes start on first
    use, :meth:`start_dispatcher` runs its dispatcher."""

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
        self.handlers = handlers
        self.faults = faults
        self.db = engine
        self.rows = InFlight(engine)
        self.transmission = Transmission(
            settings, engine, registry, sim, outbox, handlers, faults, self
        )
        n = max(1, self.cfg.senders_per_network)
        self.engine: DeliveryEngine[OutboxRow, Work] = DeliveryEngine(
            "connector",
            self.rows,
            self.transmission,
            lanes=LaneSettings(threads=n, timeout=self.cfg.http_timeout_seconds, max_connections=n),
            recording=_RECORDING,
            backoff=Backoff(self.cfg.retry_base_ms / 1000, self.cfg.retry_cap_ms / 1000),
            poll=0.2,
            in_process=self.transmission,
            rounds=self,
        )
        self._queued_left = False  # batched mode: legs or decisions wait for a batch

    def watch(self, watcher: Watcher) -> None:
        """Tell ``watcher`` what delivery does from now on (see :data:`Watcher`)."""
        self.engine.watch(watcher)

    def start_dispatcher(self) -> threading.Thread:
        return self.engine.start("connector-dispatcher")

    def stop(self) -> None:
        """Stop the dispatcher (its thread is joined by the caller); lanes go on."""
        self.engine.stop()

    def stop_lanes(self) -> None:
        self.engine.stop_lanes()

    @property
    def stopping(self) -> bool:
        return self.engine.stopping

    def wait_stop(self, seconds: float) -> bool:
        return self.engine.wait_stop(seconds)

    # --- after a commit ---------------------------------------------------------------------

    def committed(self, sent: list[str], *, deliver_here: bool = False) -> None:
        """After a commit that wrote the outbox rows ``sent`` (or a delivery). Unbatched, hand
        them to their lanes from this thread: through the dispatcher, it cost a wake-up of that
        thread and a thread switch on the way of every pacs.009 and every decision. When the
        dispatcher runs batches, wake it: it looks for due rows, and queued legs and
        decisions. Unbatched, a commit that queued nothing leaves it asleep (deliveries report
        themselves). ``deliver_here``: see :meth:`_hand_out`."""
        if sent:
            if self.cfg.batch_max <= 1 and self.engine.running and not self.engine.stopping:
                self._hand_out(sent, deliver_here)
                return
        elif self.cfg.batch_max <= 1:
            return
        self.engine.wake(due=bool(sent))

    def poke(self) -> None:
        """Have the dispatcher look for due rows now (a held row may be due)."""
        self.engine.wake(due=False)

    @property
    def held_since(self) -> int | None:
        held = self.transmission.held
        return None if held is None else held[1]

    def _hand_out(self, msg_ids: list[str], deliver_here: bool = False) -> None:
        """Hand the outbox rows this thread's commits wrote (``msg_ids``) to their lanes, from
        this thread, once those commits are durable; with ``deliver_here``, a PvP's pair is
        delivered by this thread if their lanes are idle. Only this thread's rows: looking for
        every due row, the read had to wait for whatever other writer was between its COMMIT
        and its fsync (the rows it could see), a whole fsync more on the way of a pacs.009 or
        a decision about every other time under load. Theirs are handed out by them."""
        here: list[OutboxRow] = []
        try:
            self.dispatch_due(here if deliver_here else None, msg_ids=msg_ids)
        except Exception:  # the dispatcher's next round finds them
            log.exception("connector: handing out new outbox rows failed")
            self.engine.wake()
            return
        if here:
            self.engine.deliver_here(here)

    def dispatch_due(
        self, keep: list[OutboxRow] | None = None, *, msg_ids: list[str] | None = None
    ) -> int:
        """Claim the due rows not in flight and hand them to their lanes; returns how many. A
        claim that starts after a commit sees that commit's rows. With ``keep``, a pair whose
        lanes are idle is kept for the caller to deliver (see ``DeliveryEngine.hand_out``);
        with ``msg_ids``, only those rows (:meth:`InFlight.claim_own`)."""
        if msg_ids is None:
            rows, more = self.rows.claim_due()
        else:
            rows, more = self.rows.claim_own(msg_ids)
        return self.engine.hand_out(rows, more=more, keep=keep)

    # --- the dispatcher's rounds ------------------------------------------------------------

    def flush_batches(self, *, force: bool = False) -> int:
        """Batched mode: queued legs and decisions -> their messages (:mod:`batches`), found
        by the next round of due rows. Returns messages made."""
        if self.cfg.batch_max <= 1:
            return 0
        with transaction(self.db) as work:
            made, self._queued_left = batches.flush(self.cfg, self.handlers, work, force=force)
        return made

    def linger(self) -> float | None:
        return self.cfg.batch_linger_ms / 1000 if self._queued_left else None

    def prepare(self) -> int:
        if self.cfg.batch_max <= 1:
            return 0
        self.engine.wait_stop(self.cfg.batch_linger_ms / 1000)
        self.engine.record()
        return self.flush_batches()

    def recorded(
        self, sent: Sequence[OutboxRow], delivered: Sequence[OutboxRow]
    ) -> list[OutboxRow]:
        """The fault steps of delivery, once recorded; a held row let go once something was
        delivered after it, or nothing came for a second."""
        for row in sent:
            step = "sent_pacs009" if row.msg_def_id == PACS009 else "sent_decision"
            if row.msg_def_id in (PACS009, PACS002, CAMT056):
                crash_point(f"connector.{step}", self.settings.faults)
                self.faults.crash_after(step, row.pvp_id)
        t = self.transmission
        with t.held_lock:
            held = t.held
            if held is not None and (
                any(r.id != held[0].id for r in delivered) or now_ms() - held[1] > 1000
            ):
                t.held = None
                return [held[0]]
        return []


__all__ = ["Delivery", "InFlight", "Transmission"]
