"""The PvP engine of one gateway process: reception, inbox workers, outbox dispatchers, the
connector transport. Threads only call services; everything they do is recoverable from the
database.

- Reception threads (:attr:`PvPRuntime.reception`) store what the connector posts: each takes
  every envelope waiting at that moment into one transaction, then the HTTP answers go out.
  Then, if it stored a single message and the workers have no backlog, the same thread
  processes it and sends the replies: right after its 202, without waking another thread
  for it (a thread that wakes takes more CPU for its next steps than the switch costs:
  ``ops/bench/wakeup.py``).
- Inbox workers block on a queue fed by the reception threads (what one reception stored
  together, or stored during a backlog) and by :meth:`recover_inbox` (at start, then
  periodically from ``gateway.jobs``: what a crash or a failure left behind). A worker takes
  every item queued at that moment (up to ``pvp.inbox_batch``) into one transaction; a row
  lock on the inbox item makes double processing harmless.
- Outbox dispatchers sleep until a transaction that queued a message commits; each such
  commit wakes one of them (not all: every wake-up costs a claim transaction, and with four
  dispatchers woken per message most of the gateway's CPU at low rates went to empty claims),
  which then drains what is due. One dispatcher also polls every ``idle`` seconds for retries
  whose backoff has passed; the others only as a safety net, ``idle`` x 25.
- One pooled :class:`gateway.messaging.posting.Poster` talks to the connector.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import timedelta

import msgspec
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.iso20022 import Message, MessageRejected
from gateway.messaging.outbox import OutboxDispatcher, OutboxMessage
from gateway.messaging.posting import Poster, PostFailed
from gateway.messaging.queues import Batcher, take_queued
from gateway.pvp import service
from gateway.pvp.keys import Keyring
from gateway.pvp.store import PvPUnitOfWork
from gateway.threads import start_thread

log = logging.getLogger(__name__)


class ConnectorRefused(Exception):
    """The connector answered an error; the outbox retries with backoff."""


@dataclass(frozen=True, slots=True)
class Received:
    """The HTTP answer to one envelope received."""

    status: int
    media_type: str
    body: bytes


_ACK = msgspec.json.Encoder()


class PvPRuntime:
    def __init__(self, settings: Settings, engine: Engine, *, idle: float = 0.2) -> None:
        self.settings = settings
        self.engine = engine
        self.idle = idle
        self.keyring = Keyring(settings)
        cfg = settings.pvp
        self.ctx = service.PvPContext(
            gateway_bic=settings.connector.gateway_bic,
            connector_bic=cfg.connector_bic,
            connector_url=settings.connector.url,
            connector_cert_pem=settings.iso20022.connector_cert_pem,
            signer=self.keyring.identity,
            iso=settings.iso20022,
            faults=settings.faults,
            grace_seconds=cfg.grace_seconds,
            status_retry_seconds=cfg.status_retry_seconds,
            last_resort_seconds=cfg.last_resort_seconds,
            default_deadline_seconds=cfg.default_deadline_seconds,
            inbox_retry_after_seconds=cfg.inbox_retry_after_seconds,
            notify_inbox=self.notify_inbox,
            notify_outbox=self.notify_outbox,
        )
        # Inbox items arrive in lists: what one reception transaction stored, one wake-up.
        self._inbox: queue.SimpleQueue[list[tuple[int, Message | None]] | None] = (
            queue.SimpleQueue()
        )
        # HTTP receptions: every envelope that arrives while one batch is being stored waits
        # for the next, and goes in its transaction (see gateway.messaging.queues.Batcher).
        self.reception: Batcher[bytes, Received] = Batcher(
            self._receive_here,
            name="pvp-reception",
            threads=cfg.reception_threads,
            limit=32,
            then=self.process_received,
        )
        # Per reception thread: the inbox items its last batch stored, processed once the
        # batch's answers are on their way (see notify_inbox).
        self._received = threading.local()
        self._outbox_cond = threading.Condition()
        self._outbox_pending = 0
        self._handed: queue.SimpleQueue[list[OutboxMessage]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._lock = threading.Lock()
        self.client = Poster(
            timeout=cfg.http_timeout_seconds, max_connections=cfg.http_max_connections
        )
        self.dispatcher = OutboxDispatcher(
            engine,
            {
                service.ISO_TOPIC: self.send_iso,
                service.INSTRUCTION_TOPIC: self.send_instruction,
            },
            lease=timedelta(seconds=max(30.0, cfg.http_timeout_seconds * 4)),
            batch=8,
            # At low rates every reply is sent alone: recording each delivery in its own
            # transaction cost about one write transaction per message.
            record_within=0.05,
        )

    def uow(self) -> PvPUnitOfWork:
        return PvPUnitOfWork(self.engine)

    # notifications (after commit) ------------------------------------------

    def notify_inbox(self, items: list[tuple[int, Message | None]]) -> None:
        """Inbox items stored (after the commit): kept for the reception thread that stored
        them (it processes them after answering), or queued for the workers."""
        mine: list[tuple[int, Message | None]] | None = getattr(self._received, "items", None)
        if mine is not None:
            mine.extend(items)
        else:
            self._inbox.put(items)

    def notify_outbox(self) -> None:
        with self._outbox_cond:
            self._outbox_pending += 1
            self._outbox_cond.notify()

    def _hand_to_dispatchers(self, claimed: list[OutboxMessage]) -> None:
        """Messages this thread claimed but may not wait to send: a dispatcher sends them
        (still claimed, no other dispatcher would until their lease ran out)."""
        self._handed.put(claimed)
        self.notify_outbox()

    # reception -------------------------------------------------------------

    def receive(self, raws: list[bytes], uow: PvPUnitOfWork | None = None) -> list[Received]:
        """Envelopes from the connector -> per envelope the HTTP answer: 202 with the
        technical acknowledgement once stored (all in one transaction), or 400 with a signed
        admi.002 when refused (that refusal is stored too).

        With ``uow`` (a sending unit of work, :meth:`_sending_uow`), the new messages are
        also applied in that transaction, and the replies they queue are left claimed in
        ``uow.claimed`` for the caller to send once the answers are out."""
        answers: list[Received] = []
        outcomes = service.receive_messages(
            uow or self.uow(), raws, self.ctx, process=uow is not None
        )
        for raw, outcome in zip(raws, outcomes, strict=True):
            if isinstance(outcome, MessageRejected):
                admi = service.record_rejection(self.uow(), raw, outcome, self.ctx)
                answers.append(Received(400, "application/xml", admi))
            else:
                ack = {
                    "msg_id": outcome.msg_id,
                    "sha256": outcome.sha256,
                    "duplicate": outcome.duplicate,
                }
                answers.append(Received(202, "application/json", _ACK.encode(ack)))
        return answers

    def _receive_here(self, raws: list[bytes]) -> list[Received]:
        """:meth:`receive` on a reception thread. While the workers have no backlog, it
        applies what it stores in the same transaction (``pvp.process_on_receipt``): one
        commit before the 202s instead of one before and one after. The replies that queued,
        and anything stored but not applied, are kept for :meth:`process_received`, which
        the thread runs once the answers are on their way."""
        self._received.items = []
        self._received.uow = None
        uow = None
        if (
            self.settings.pvp.process_on_receipt
            and self._inbox.empty()
            and self._started
            and not self._stop.is_set()
        ):
            uow = self._sending_uow()
        answers = self.receive(raws, uow)
        # Only now: had the transaction failed, what it claimed was never committed.
        self._received.uow = uow
        return answers

    def process_received(self, may_wait: bool) -> None:
        """On a reception thread, after its answers went out: send the replies of what it
        applied, and process what it stored but did not apply, then send those replies;
        unless ``may_wait`` is false (the other reception threads are busy with replies of
        their own: the connector's posts need one free, see Batcher). Then a dispatcher
        sends the replies, and the workers process."""
        uow: PvPUnitOfWork | None = getattr(self._received, "uow", None)
        self._received.uow = None
        if uow is not None and uow.claimed:
            if may_wait:
                self._send_claimed(uow)
            else:
                self._hand_to_dispatchers(uow.claimed)
        items: list[tuple[int, Message | None]] = getattr(self._received, "items", None) or []
        self._received.items = None
        if not items:
            return
        if (
            not may_wait
            or len(items) > 1
            or not self._inbox.empty()
            or not self._started
            or self._stop.is_set()
        ):
            # Under load (this batch stored several, or the workers have a backlog) the
            # workers take them, in transactions of many, while this thread goes back to
            # storing; stopped, recover_inbox at the next start does.
            self._inbox.put(items)
            return
        self.process_batch(items)

    # lifecycle -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stop.clear()
            self.dispatcher.release_leases_at_start()
            for i in range(max(1, self.settings.pvp.workers)):
                self._spawn(self._work, f"pvp-inbox-{i}")
            for i in range(max(1, self.settings.pvp.dispatchers)):
                poll = self.idle if i == 0 else self.idle * 25
                self._spawn(lambda poll=poll: self._dispatch(poll), f"pvp-outbox-{i}")
        self.reception.start()
        self.recover_inbox(everything=True)
        self.notify_outbox()

    def _spawn(self, target: object, name: str) -> None:
        self._threads.append(start_thread(target, name))  # type: ignore[arg-type]

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stop.set()
            with self._outbox_cond:
                self._outbox_cond.notify_all()
            for _ in self._threads:
                self._inbox.put(None)
            for t in self._threads:
                t.join(timeout=10)
            self._threads.clear()
            try:
                self.dispatcher.record_delivered()
            except Exception:  # left claimed: sent again after the lease (or at restart)
                log.exception("pvp: recording the last deliveries failed")
        self.reception.stop()
        self.client.close()

    # inbox -----------------------------------------------------------------

    def recover_inbox(self, *, everything: bool = False) -> int:
        """Queue inbox items the workers have not processed (all of them at start)."""
        ids = service.pending_inbox(self.uow(), everything=everything)
        if ids:
            self._inbox.put([(message_id, None) for message_id in ids])
            log.info("pvp: %d inbox item(s) queued for processing", len(ids))
        return len(ids)

    def _sending_uow(self) -> PvPUnitOfWork:
        """A unit of work whose outbound messages this thread sends right after the commit
        (claimed in the transaction, so no dispatcher takes them meanwhile)."""
        return PvPUnitOfWork(self.engine, claim_outbound_for=self.dispatcher.lease)

    def _send_claimed(self, uow: PvPUnitOfWork) -> None:
        claimed = uow.claimed
        if claimed:
            try:
                self.dispatcher.deliver(claimed)
            except Exception:  # recorded as due again once the lease runs out
                log.exception("pvp: sending %d message(s) failed", len(claimed))
                self.notify_outbox()

    def process(self, message_id: int, message: Message | None = None) -> None:
        try:
            uow = self._sending_uow()
            service.process_inbox_item(uow, message_id, self.ctx, parsed=message)
            self._send_claimed(uow)
        except Exception as exc:  # any failure: recorded, retried by recover_inbox
            log.exception("pvp: processing inbox item %s failed", message_id)
            try:
                service.inbox_failed(self.uow(), message_id, f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("pvp: could not record the failure of inbox item %s", message_id)

    def process_batch(self, items: list[tuple[int, Message | None]]) -> None:
        """Process items in one transaction; if that fails, one at a time (each failure then
        recorded against its own item)."""
        if len(items) == 1:
            self.process(*items[0])
            return
        try:
            uow = self._sending_uow()
            service.process_inbox_items(uow, items, self.ctx)
        except Exception:
            log.warning(
                "pvp: a batch of %d inbox items failed; one at a time", len(items), exc_info=True
            )
            for item in items:
                self.process(*item)
            return
        self._send_claimed(uow)

    def _work(self) -> None:
        batch = max(1, self.settings.pvp.inbox_batch)
        while True:
            first = self._inbox.get()
            if first is None or self._stop.is_set():
                return
            # Whatever else is queued right now goes into the same transaction.
            parts, stop = take_queued(self._inbox, first, batch)
            items = [item for part in parts for item in part]
            for i in range(0, len(items), batch):
                self.process_batch(items[i : i + batch])
            if stop:
                return

    # outbox ----------------------------------------------------------------

    def _dispatch(self, poll: float) -> None:
        while not self._stop.is_set():
            with self._outbox_cond:
                if self._outbox_pending == 0:
                    self._outbox_cond.wait(poll)
                # What was notified so far is covered by the drain below; a commit during
                # it wakes another dispatcher, or this one again.
                self._outbox_pending = 0
            if self._stop.is_set():
                return
            try:
                while True:
                    try:
                        handed = self._handed.get_nowait()
                    except queue.Empty:
                        break
                    self.dispatcher.deliver(handed)
                while self.dispatcher.run_once() and not self._stop.is_set():
                    pass
            except Exception:
                log.exception("pvp: outbox dispatch failed")

    def send_iso(self, msg: OutboxMessage) -> None:
        try:
            resp = self.client.post(
                msg.destination, msg.payload, {"content-type": "application/xml"}
            )
        except PostFailed as exc:
            raise ConnectorRefused(str(exc)) from exc
        if resp.status_code >= 300:
            if 400 <= resp.status_code < 500:
                log.error(
                    "connector refused %s with %s: %s",
                    msg.event_id,
                    resp.status_code,
                    resp.text[:500],
                )
            raise ConnectorRefused(f"HTTP {resp.status_code}: {resp.text[:300]}")

    def send_instruction(self, msg: OutboxMessage) -> None:
        headers = {"content-type": "application/json"}
        token = self.settings.pvp.connector_token
        if token is not None:
            headers["authorization"] = f"Bearer {token.get_secret_value()}"
        try:
            resp = self.client.post(msg.destination, msg.payload, headers)
        except PostFailed as exc:
            raise ConnectorRefused(str(exc)) from exc
        instruction_id = str(json.loads(msg.headers).get("instruction_id", ""))
        if resp.status_code < 300 or resp.status_code == 409:
            service.instruction_delivered(self.uow(), instruction_id)
            return
        if 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 408, 429):
            # The connector will never accept these bytes: record the refusal, stop retrying.
            log.error("connector refused instruction %s: %s", instruction_id, resp.text[:500])
            service.instruction_delivered(
                self.uow(), instruction_id, refused_reason=f"{resp.status_code}: {resp.text[:180]}"
            )
            return
        raise ConnectorRefused(f"HTTP {resp.status_code}: {resp.text[:300]}")

    # scheduled (gateway.jobs) ----------------------------------------------

    def check_deadlines(self) -> service.DeadlineReport:
        return service.check_deadlines(self.uow(), self.ctx)


__all__ = ["ConnectorRefused", "PvPRuntime"]
