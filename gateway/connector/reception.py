"""Reception: an envelope posted to ``/iso20022/messages`` is verified against the sender's
pinned certificate, stored and processed (:class:`~gateway.connector.handlers.Handlers`) in one
transaction, and acknowledged (202; 400 with an admi.002 if refused). A message whose
processing failed is stored unprocessed and retried from the inbox."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.connector import store
from gateway.connector.delivery import Delivery
from gateway.connector.faults import Faults, fire_steps
from gateway.connector.handlers import Handlers
from gateway.connector.outbox import Work, transaction
from gateway.connector.registry import Registry
from gateway.connector.rows import InboxRow
from gateway.connector.store import now_ms
from gateway.iso20022 import (
    KeyPair,
    Message,
    MessageRejected,
    admi002_for,
    build,
    header_for,
    parse,
)
from gateway.sqlite.fastsql import run

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    status: int
    body: Any
    xml: bool = False


@dataclass(slots=True)
class Received:
    """The answers to envelopes received together, and what their commits queued to send
    (``stored``: whether any was stored, so that there may be something to deliver)."""

    answers: list[Inbound]
    sent: list[str] = field(default_factory=list)
    stored: bool = False


class _Refused(Exception):
    """A message received alone was refused: its transaction is rolled back."""

    def __init__(self, index: int, rejection: MessageRejected, sender: str) -> None:
        super().__init__(rejection)
        self.refusal = (index, rejection, sender)


class Reception:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        registry: Registry,
        handlers: Handlers,
        delivery: Delivery,
        faults: Faults,
        signer: KeyPair,
    ) -> None:
        self.settings = settings
        self.bic = settings.connector.bic
        self.engine = engine
        self.registry = registry
        self.handlers = handlers
        self.delivery = delivery
        self.faults = faults
        self.signer = signer

    def _reject(self, exc: MessageRejected, to_bic: str | None) -> Inbound:
        admi = admi002_for(exc)
        header = header_for(admi, from_bic=self.bic, to_bic=to_bic or self.bic)
        return Inbound(400, build(admi, header, signer=self.signer), xml=True)

    def _check(self, raw: bytes) -> tuple[Message, str] | Inbound:
        """(message, sender) of an envelope that parses and verifies, else the refusal."""
        named: list[str] = []

        def pinned(bic: str) -> str | None:
            named.append(bic)
            return self.registry.pinned(bic)

        try:
            # Verified against the pinned certificate of the sender its header names, on the
            # tree parse() builds anyway.
            parsed = parse(raw, settings=self.settings.iso20022, certificate_of=pinned)
            if parsed.header is None:
                raise MessageRejected("FF01", "an envelope (AppHdr + Document) is required")
            return parsed.message, parsed.header.from_bic
        except MessageRejected as exc:
            sender = named[0] if named else None
            log.warning("refused a message from %s: %r", sender, exc)
            return self._reject(exc, sender)

    def receive(self, raws: list[bytes]) -> Received:
        """Envelopes posted at the same moment -> their answers, and what their commits
        queued (for the caller to hand out once it has answered).

        Each is verified alone; those accepted are stored and processed in one transaction,
        each in a savepoint (one refused there spares the others; one alone goes without, its
        refusal rolls the transaction back). If the transaction fails, they are taken one at
        a time, as :meth:`_accept` does."""
        answers: list[Inbound | None] = [None] * len(raws)
        accepted: list[tuple[int, Message, str, str, bytes]] = []
        for i, raw in enumerate(raws):
            checked = self._check(raw)
            if isinstance(checked, Inbound):
                answers[i] = checked
            else:
                accepted.append((i, checked[0], checked[1], hashlib.sha256(raw).hexdigest(), raw))
        refused: list[tuple[int, MessageRejected, str]] = []
        sent: list[str] = []
        # A message alone needs no savepoint: refused, its whole transaction is rolled back.
        alone = len(accepted) == 1
        try:
            with transaction(self.engine) as work:
                for i, msg, sender, sha, raw in accepted:
                    try:
                        with nullcontext() if alone else transaction(self.engine, work):
                            taken = self.handlers.take(work, msg, sender, sha, raw)
                    except MessageRejected as exc:
                        if alone:
                            raise _Refused(i, exc, sender) from exc
                        refused.append((i, exc, sender))
                        continue
                    ack = {"msg_id": msg.id, "sha256": sha, "duplicate": not taken}
                    answers[i] = Inbound(202, ack)
            fire_steps(self.faults, self.settings.faults, work.steps)
            sent = work.sent
        except _Refused as alone_refused:
            refused.append(alone_refused.refusal)
        except Exception:
            log.exception("a batch of %d inbound messages failed; one at a time", len(accepted))
            refused = []
            for i, msg, sender, sha, raw in accepted:
                try:
                    answers[i] = self._accept(msg, sender, sha, raw, sent)
                except MessageRejected as exc:
                    refused.append((i, exc, sender))
        for i, rejection, sender in refused:
            log.warning("refused a message from %s: %r", sender, rejection)
            answers[i] = self._reject(rejection, sender)
        return Received([a for a in answers if a is not None], sent, bool(accepted))

    def _accept(self, msg: Message, sender: str, sha: str, raw: bytes, sent: list[str]) -> Inbound:
        """Store one message and process it in one transaction (one commit before the 202);
        if processing fails, store it alone: the sweeper processes it later. What its commit
        queued is added to ``sent``."""
        ack = {"msg_id": msg.id, "sha256": sha, "duplicate": False}
        try:
            with transaction(self.engine) as work:
                if not self.handlers.take(work, msg, sender, sha, raw):
                    return Inbound(202, {**ack, "duplicate": True})
        except MessageRejected:
            raise
        except Exception:
            log.exception("processing inbound %s %s failed; stored for a retry", msg.id, sender)
            with transaction(self.engine) as work:
                if self.handlers.seen(work, msg, sender, sha):
                    return Inbound(202, {**ack, "duplicate": True})
                self.handlers.store_inbound(work, msg, sender, sha, raw, processed=False)
            return Inbound(202, ack)
        fire_steps(self.faults, self.settings.faults, work.steps)
        sent.extend(work.sent)
        return Inbound(202, ack)

    # --- the inbox: messages stored unprocessed -------------------------------------------

    def process_pending_inbox(self, older_than_ms: int) -> None:
        cutoff = now_ms() - older_than_ms
        with store.reader(self.engine) as conn:
            rows = store.pending_inbox(conn, cutoff)
        self.process_inbox_rows(rows)

    def process_inbox_rows(self, rows: Sequence[InboxRow]) -> None:
        for row in rows:
            try:
                message: Message | None = parse(row.raw, settings=self.settings.iso20022).message
            except MessageRejected:
                message = None
            self._process_inbox_row(row.id, message, row.sender_bic, row.raw)

    def _process_inbox_row(
        self, inbox_id: int, message: Message | None, sender: str, raw: bytes
    ) -> None:
        try:
            with transaction(self.engine) as work:
                done = run(work.conn, store.SELECT_INBOX_PROCESSED, {"id": inbox_id}).scalar_one()
                if not done and message is not None:
                    self.handlers.process(work, message, sender, raw)
                run(work.conn, store.MARK_INBOX_PROCESSED, {"k_id": inbox_id})
        except Exception:
            log.exception("processing inbound message %s failed; will retry", inbox_id)
            return
        fire_steps(self.faults, self.settings.faults, work.steps)
        self.delivery.committed(work.sent)


__all__ = ["Inbound", "Received", "Reception", "Work"]
