"""The PvP engine of one gateway process: the threads that call the PvP use cases, and the one
place that decides, from what each use case returns, what happens next. Everything the threads
do is recoverable from the database.

The path of one message the connector posts, by calls:

1. ``gateway.api.partner.iso20022_messages`` awaits ``PvPRuntime.reception.submit(raw)``.
2. A reception thread runs :meth:`PvPRuntime._receive_batch` on every envelope waiting then:
   :func:`gateway.pvp.reception.receive_messages` checks and stores them in one transaction
   and, while the workers have no backlog (``pvp.process_on_receipt``), applies each there
   too (``gateway.pvp.handlers.apply``: a pacs.009 locks the DT amount and queues its
   pacs.002), commits, and returns the :class:`~gateway.pvp.reception.Reception`.
3. :meth:`PvPRuntime._answers` makes the HTTP answers (202 with the acknowledgement, 400 with
   a signed admi.002); the batcher sends them.
4. Then, on the same thread, :meth:`PvPRuntime._after_reception`: the replies the reception
   claimed go to the connector (:meth:`PvPRuntime._send` -> ``OutboxDispatcher.deliver`` ->
   :meth:`PvPRuntime.send_iso`), or to the connector's lane when this thread may not wait on
   a post; a message stored but not applied is processed here
   (:meth:`PvPRuntime.process_batch`) when it is alone and the workers are idle, else it is
   queued for the inbox workers.
5. :meth:`PvPRuntime.process_batch` (here, or on an inbox worker) calls
   :func:`gateway.pvp.inbox.process_items` (the handlers again, one commit for the batch)
   and sends the replies it claimed with :meth:`PvPRuntime._send`.

The threads:

- Reception threads (:attr:`PvPRuntime.reception`): each takes every envelope waiting at
  that moment into one transaction (see ``gateway.messaging.queues.Batcher``). Processing
  right after the 202, on the same thread, costs less than waking another thread for it
  (``ops/bench/wakeup.py``).
- Inbox workers block on a queue fed by the reception threads (what one reception stored
  together, or stored during a backlog) and by :meth:`PvPRuntime.recover_inbox` (at start,
  then periodically from ``gateway.jobs``: what a crash or a failure left behind). A worker
  takes every item queued at that moment (up to ``pvp.inbox_batch``) into one transaction; a
  row lock on the inbox item makes double processing harmless.
- The outbox (``gateway.messaging.delivery``, one engine with the connector's): the lane of
  the connector, ``pvp.dispatchers`` threads, sends what a thread claimed but may not wait
  to send, and what the other use cases queued (:meth:`PvPRuntime.instruct`,
  :meth:`PvPRuntime.resolve`, :meth:`PvPRuntime.check_deadlines`: claimed in their
  transaction and handed to the lane after the commit, no claim transaction of a
  dispatcher's). The dispatcher thread (``pvp-outbox``) claims what no thread holds (retries
  whose backoff has passed, what a crash left), when :meth:`PvPRuntime.wake_dispatcher` wakes
  it and every ``idle`` seconds, and records deliveries, several in one transaction.
- One pooled :class:`gateway.messaging.posting.Poster` talks to the connector.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import msgspec
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.iso20022 import Message, MessageRejected
from gateway.messaging.lanes import LaneSettings
from gateway.messaging.outbox import OutboxDispatcher, OutboxMessage
from gateway.messaging.posting import Poster, PostFailed
from gateway.messaging.queues import Answered, Batcher, take_queued
from gateway.pvp import deadlines, inbox, instructions, reception
from gateway.pvp.context import INSTRUCTION_TOPIC, ISO_TOPIC, PvPContext
from gateway.pvp.inbox import InboxItem
from gateway.pvp.keys import Keyring
from gateway.pvp.model import Instruction, Leg
from gateway.pvp.reception import Ack, Reception
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
        self.ctx = PvPContext(
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
            safety_margin_seconds=settings.connector.safety_margin_ms / 1000,
            inbox_retry_after_seconds=cfg.inbox_retry_after_seconds,
        )
        # Inbox items arrive in lists: what one reception transaction stored, one wake-up.
        self._inbox: queue.SimpleQueue[list[InboxItem] | None] = queue.SimpleQueue()
        # HTTP receptions: every envelope that arrives while one batch is being stored waits
        # for the next, and goes in its transaction (see gateway.messaging.queues.Batcher).
        self.reception: Batcher[bytes, Received] = Batcher(
            self._receive_batch,
            name="pvp-reception",
            threads=cfg.reception_threads,
            limit=32,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._lock = threading.Lock()
        self.client = Poster(
            timeout=cfg.http_timeout_seconds, max_connections=cfg.http_max_connections
        )
        self.dispatcher = OutboxDispatcher(
            engine,
            {ISO_TOPIC: self.send_iso, INSTRUCTION_TOPIC: self.send_instruction},
            lease=timedelta(seconds=max(30.0, cfg.http_timeout_seconds * 4)),
            batch=8,
            # At low rates every reply is sent alone: recording each delivery in its own
            # transaction cost about one write transaction per message.
            record_within=0.05,
            name="pvp",
            # The connector is the one destination: its lane's threads send what the
            # threads that claimed it may not, and what the dispatcher claims.
            lanes=LaneSettings(
                threads=max(1, cfg.dispatchers),
                timeout=cfg.http_timeout_seconds,
                max_connections=cfg.http_max_connections,
            ),
            poll=idle,
        )

    def uow(self) -> PvPUnitOfWork:
        return PvPUnitOfWork(self.engine)

    def _sending_uow(self) -> PvPUnitOfWork:
        """A unit of work whose outbound messages this thread sends right after the commit
        (claimed in the transaction, so no dispatcher takes them meanwhile)."""
        return PvPUnitOfWork(self.engine, claim_outbound_for=self.dispatcher.lease)

    # reception -------------------------------------------------------------

    def _receive_batch(self, raws: list[bytes]) -> Answered[Received]:
        """The reception threads' work: :meth:`receive`, applying what it stores in the same
        transaction while the workers have no backlog (one commit before the 202s instead of
        one before and one after); then, once the answers are out, :meth:`_after_reception`
        with what the reception produced."""
        answers, got = self.receive(raws, process=self._processes_on_receipt())
        return Answered(answers, then=functools.partial(self._after_reception, got))

    def receive(
        self, raws: Sequence[bytes], *, process: bool = False
    ) -> tuple[list[Received], Reception]:
        """Envelopes from the connector -> per envelope the HTTP answer (202 with the technical
        acknowledgement once stored, all in one transaction; 400 with a signed admi.002 when
        refused, that refusal stored too), and what the reception produced. With ``process``
        the new messages are applied in that transaction, their replies claimed for sending."""
        uow = self._sending_uow() if process else self.uow()
        got = reception.receive_messages(uow, raws, self.ctx, process=process)
        return self._answers(raws, got.outcomes), got

    def _answers(
        self, raws: Sequence[bytes], outcomes: Sequence[Ack | MessageRejected]
    ) -> list[Received]:
        answers: list[Received] = []
        for raw, outcome in zip(raws, outcomes, strict=True):
            if isinstance(outcome, MessageRejected):
                admi = reception.record_rejection(self.uow(), raw, outcome, self.ctx)
                answers.append(Received(400, "application/xml", admi))
            else:
                ack = {
                    "msg_id": outcome.msg_id,
                    "sha256": outcome.sha256,
                    "duplicate": outcome.duplicate,
                }
                answers.append(Received(202, "application/json", _ACK.encode(ack)))
        return answers

    def _processes_on_receipt(self) -> bool:
        return (
            self.settings.pvp.process_on_receipt
            and self._inbox.empty()
            and self._started
            and not self._stop.is_set()
        )

    def _after_reception(self, got: Reception, may_wait: bool) -> None:
        """On a reception thread, after its answers went out: send the replies of what it
        applied, and process what it stored but did not apply, then send those replies;
        unless ``may_wait`` is false (the other reception threads are busy with replies of
        their own: the connector's posts need one free, see Batcher). Then the connector's
        lane sends the replies (still claimed: no dispatcher takes them meanwhile), and the
        workers process."""
        if got.claimed:
            if may_wait:
                self._send(got.claimed)
            else:
                self.dispatcher.hand_out(got.claimed)
        if not got.inbox:
            return
        if self._processes_here(got.inbox, may_wait):
            self.process_batch(got.inbox)
        else:
            self._inbox.put(got.inbox)

    def _processes_here(self, items: Sequence[InboxItem], may_wait: bool) -> bool:
        """Whether the reception thread that stored ``items`` processes them itself. Under
        load (it stored several, or the workers have a backlog) the workers take them, in
        transactions of many, while this thread goes back to storing; stopped, recover_inbox
        at the next start does."""
        return (
            may_wait
            and len(items) == 1
            and self._inbox.empty()
            and self._started
            and not self._stop.is_set()
        )

    # inbox -----------------------------------------------------------------

    def recover_inbox(self, *, everything: bool = False) -> int:
        """Queue inbox items the workers have not processed (all of them at start)."""
        ids = inbox.pending(self.uow(), everything=everything)
        if ids:
            self._inbox.put([(message_id, None) for message_id in ids])
            log.info("pvp: %d inbox item(s) queued for processing", len(ids))
        return len(ids)

    def process_batch(self, items: Sequence[InboxItem]) -> None:
        """Process items in one transaction and send their replies; if that fails, one at a
        time (each failure then recorded against its own item)."""
        if len(items) == 1:
            self.process(*items[0])
            return
        try:
            done = inbox.process_items(self._sending_uow(), items, self.ctx)
        except Exception:
            log.warning(
                "pvp: a batch of %d inbox items failed; one at a time", len(items), exc_info=True
            )
            for item in items:
                self.process(*item)
            return
        self._send(done.claimed)

    def process(self, message_id: int, message: Message | None = None) -> None:
        """Process one item and send its replies; a failure is recorded against it."""
        try:
            done = inbox.process_items(self._sending_uow(), [(message_id, message)], self.ctx)
            self._send(done.claimed)
        except Exception as exc:  # any failure: recorded, retried by recover_inbox
            log.exception("pvp: processing inbox item %s failed", message_id)
            try:
                inbox.record_failure(self.uow(), message_id, f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("pvp: could not record the failure of inbox item %s", message_id)

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

    def wake_dispatcher(self) -> None:
        """Wake the outbox dispatcher: a transaction that queued a message it did not claim
        has committed."""
        self.dispatcher.wake()

    def _send(self, claimed: list[OutboxMessage]) -> None:
        """Send messages this thread claimed in the transaction that queued them."""
        if claimed:
            try:
                self.dispatcher.deliver(claimed)
            except Exception:  # recorded as due again once the lease runs out
                log.exception("pvp: sending %d message(s) failed", len(claimed))
                self.wake_dispatcher()

    def _queueing_uow(self) -> PvPUnitOfWork:
        """A unit of work whose messages go to the connector's lane once it commits (claimed
        in its transaction: no dispatcher's claim, no wake-up of it), while the runtime runs;
        stopped, left to the dispatcher, which finds them at start."""
        return self._sending_uow() if self._started else self.uow()

    def _hand_out(self, uow: PvPUnitOfWork) -> None:
        if uow.claim_outbound_for is not None and uow.claimed:
            self.dispatcher.hand_out(uow.claimed)

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
            instructions.instruction_delivered(self.uow(), instruction_id)
            return
        if 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 408, 429):
            # The connector will never accept these bytes: record the refusal, stop retrying.
            log.error("connector refused instruction %s: %s", instruction_id, resp.text[:500])
            instructions.instruction_delivered(
                self.uow(), instruction_id, refused_reason=f"{resp.status_code}: {resp.text[:180]}"
            )
            return
        raise ConnectorRefused(f"HTTP {resp.status_code}: {resp.text[:300]}")

    # use cases whose messages the connector's lane sends ------------------

    def instruct(self, inst: Instruction) -> tuple[Instruction, bool]:
        """A participant's instruction (``gateway.api.partner``); a new one is sent."""
        uow = self._queueing_uow()
        stored, created = instructions.instruct(uow, inst, self.ctx)
        self._hand_out(uow)
        return stored, created

    def resolve(
        self,
        ref: str,
        action: Literal["commit", "release"],
        reason: str,
        actor: instructions.Actor,
        *,
        fulfilment: str | None = None,
    ) -> list[Leg]:
        """An operator's decision (``gateway.api.partner``); the connector is told."""
        uow = self._queueing_uow()
        done = instructions.resolve(
            uow, ref, action, reason, actor, self.ctx, fulfilment=fulfilment
        )
        self._hand_out(uow)
        return done

    def check_deadlines(self) -> deadlines.DeadlineReport:
        """Scheduled (``gateway.jobs``): ask the connector about legs past their deadline."""
        uow = self._queueing_uow()
        report = deadlines.check_deadlines(uow, self.ctx)
        self._hand_out(uow)
        return report

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
            self.dispatcher.start("pvp-outbox")
        self.reception.start()
        self.recover_inbox(everything=True)

    def _spawn(self, target: object, name: str) -> None:
        self._threads.append(start_thread(target, name))  # type: ignore[arg-type]

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stop.set()
            for _ in self._threads:
                self._inbox.put(None)
            for t in self._threads:
                t.join(timeout=10)
            self._threads.clear()
            self.dispatcher.stop()  # what is queued is sent, what was sent recorded
        self.reception.stop()
        try:
            self.dispatcher.record_delivered()  # what the last receptions sent
        except Exception:  # left claimed: sent again after the lease (or at restart)
            log.exception("pvp: recording the last deliveries failed")
        self.client.close()


__all__ = ["ConnectorRefused", "PvPRuntime", "Received"]
