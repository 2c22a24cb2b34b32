"""An in-memory PvP unit of work, for running the PvP handlers without I/O.

It extends the ledger's fake (``tests.support.ledger_fakes``) with the PvP repository and the
outbox, and keeps the properties of the SQL store that the handlers rely on:

- transactions: what a unit of work did is undone unless it commits, and a ``savepoint()``
  left by an exception undoes only what it did (the messages it claimed for sending too);
- constraints: one leg per UETR, updates only of legs that exist, one outbox row per event id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.iso20022 import Message, Pacs009, parse
from gateway.messaging.outbox import OutboxMessage
from gateway.pvp import handlers
from gateway.pvp.context import PvPContext
from gateway.pvp.keys import generate
from gateway.pvp.model import Instruction, Leg
from gateway.pvp.reception import leg_terms
from tests.support.ledger_fakes import NOW, ConstraintViolation, FakeUnitOfWork

GATEWAY_BIC = "NBKZKZKAXXX"
CONNECTOR_BIC = "SWHQBEBBXXX"
_IDENTITY = generate(GATEWAY_BIC)
CTX = PvPContext(
    gateway_bic=GATEWAY_BIC,
    connector_bic=CONNECTOR_BIC,
    connector_url="http://connector.invalid",
    connector_cert_pem=None,
    signer=lambda: _IDENTITY,
)


@dataclass(frozen=True)
class StoredMessage:
    direction: str
    msg_def_id: str | None
    msg_id: str | None
    raw: bytes
    uetrs: tuple[str, ...]


@dataclass
class _PvPState:
    legs: dict[str, Leg] = field(default_factory=dict)
    messages: list[StoredMessage] = field(default_factory=list)
    instructions: dict[str, Instruction] = field(default_factory=dict)
    outbox: dict[str, bool] = field(default_factory=dict)
    """Event id -> sent."""

    def copy(self) -> _PvPState:
        return _PvPState(
            dict(self.legs), list(self.messages), dict(self.instructions), dict(self.outbox)
        )


class FakePvPRepository:
    """The part of ``gateway.pvp.store.SqlPvPRepository`` the handlers use."""

    def __init__(self, state: _PvPState) -> None:
        self.state = state

    def legs_for_update(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        return self.legs(uetrs)

    def legs(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        return {u: self.state.legs[u] for u in sorted(set(uetrs)) if u in self.state.legs}

    def insert_legs(self, legs: Sequence[Leg]) -> None:
        for leg in legs:
            if leg.uetr in self.state.legs:
                raise ConstraintViolation(f"duplicate leg {leg.uetr}")
            self.state.legs[leg.uetr] = leg

    def update_legs(self, legs: Sequence[Leg]) -> None:
        for leg in legs:
            if leg.uetr not in self.state.legs:
                raise ConstraintViolation(f"update of a missing leg {leg.uetr}")
            self.state.legs[leg.uetr] = leg

    def add_message(
        self,
        direction: str,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        msg_def_id: str | None = None,
        msg_id: str | None = None,
        uetrs: Iterable[str] = (),
        **_: Any,
    ) -> int:
        self.state.messages.append(StoredMessage(direction, msg_def_id, msg_id, raw, tuple(uetrs)))
        return len(self.state.messages)

    def record_message(
        self, direction: str, raw: bytes, sha256: str, now: datetime, **kw: Any
    ) -> None:
        self.add_message(direction, raw, sha256, now, **kw)

    def outbound_with(self, raw: bytes, sha256: str, now: datetime, **_: Any) -> None:
        return None  # stored by record_message, as on SQLite

    def reply_pending(self, uetr: str) -> bool:
        return any(
            m.direction == "out" and uetr in m.uetrs and not self.state.outbox.get(m.msg_id or "")
            for m in self.state.messages
        )

    def prefetch_instructions(self, ids: Iterable[str]) -> None:
        pass

    def instructions_for_update(self, ids: Iterable[str]) -> dict[str, Instruction]:
        return {i: self.state.instructions[i] for i in sorted(ids) if i in self.state.instructions}

    def update_instruction(self, inst: Instruction) -> None:
        self.state.instructions[inst.instruction_id] = inst


class FakeOutbox:
    """``gateway.messaging.outbox.OutboxRepository``: with ``claim_for``, what it queues is
    listed in ``claimed`` for the caller to send."""

    def __init__(self, state: _PvPState, claim_for: timedelta | None) -> None:
        self.state = state
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
        with_: tuple[str, Any] | None = None,
    ) -> str:
        assert event_id is not None and with_ is None
        if event_id in self.state.outbox:
            raise ConstraintViolation(f"duplicate outbox event {event_id}")
        self.state.outbox[event_id] = False
        if self.claim_for is not None:
            row = len(self.state.outbox)
            self.claimed.append(
                OutboxMessage(row, event_id, topic, destination, payload, headers, 0, now or NOW)
            )
        return event_id


class FakePvPUnitOfWork(FakeUnitOfWork):
    """``gateway.pvp.store.PvPUnitOfWork`` in memory; see the module docstring."""

    def __init__(self, *wallets: Any, claim: bool = True) -> None:
        super().__init__(*wallets)
        self._pvp = _PvPState()
        self._pvp_snapshot: _PvPState | None = None
        self.pvp = FakePvPRepository(self._pvp)
        self.outbox = FakeOutbox(self._pvp, timedelta(seconds=30) if claim else None)

    def __enter__(self) -> FakePvPUnitOfWork:
        super().__enter__()
        self._pvp_snapshot = self._pvp.copy()
        self.outbox.claimed = []
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._committed:
            assert self._pvp_snapshot is not None
            self._restore_pvp(self._pvp_snapshot)
        self._pvp_snapshot = None
        super().__exit__(exc_type, exc, tb)

    def _restore_pvp(self, snapshot: _PvPState) -> None:
        self._pvp.legs = snapshot.legs
        self._pvp.messages = snapshot.messages
        self._pvp.instructions = snapshot.instructions
        self._pvp.outbox = snapshot.outbox

    @property
    def claimed(self) -> list[OutboxMessage]:
        return self.outbox.claimed

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        ledger, pvp, claimed = self._state.copy(), self._pvp.copy(), len(self.outbox.claimed)
        try:
            yield
        except BaseException:
            self._restore(ledger)
            self._restore_pvp(pvp)
            del self.outbox.claimed[claimed:]
            raise

    # read access for assertions, outside any transaction -------------------

    @property
    def legs(self) -> dict[str, Leg]:
        return dict(self._pvp.legs)

    def sent(self) -> list[Message]:
        """The messages queued for the connector, in order, as the connector reads them."""
        return [
            parse(m.raw, cert_pem=_IDENTITY.cert_pem, now=NOW).message
            for m in self._pvp.messages
            if m.direction == "out"
        ]

    def mark_sent(self) -> None:
        """The dispatcher delivered everything queued so far."""
        self._pvp.outbox = dict.fromkeys(self._pvp.outbox, True)


def receive(uow: FakePvPUnitOfWork, msg: Pacs009, now: datetime = NOW) -> None:
    """What reception stores for a pacs.009 before it is applied: a received leg per UETR."""
    with uow:
        uow.pvp.insert_legs(
            [Leg.receive(tx.uetr, leg_terms(msg, tx, CTX), now) for tx in msg.transactions]
        )
        uow.commit()


def apply(uow: FakePvPUnitOfWork, message: Message, now: datetime = NOW) -> list[OutboxMessage]:
    """Apply one inbound message in its own transaction; the replies it claimed."""
    with uow:
        handlers.apply(uow, message, CTX, now)  # type: ignore[arg-type]
        uow.commit()
    return list(uow.claimed)


__all__ = [
    "CONNECTOR_BIC",
    "CTX",
    "GATEWAY_BIC",
    "FakePvPRepository",
    "FakePvPUnitOfWork",
    "apply",
    "receive",
]
