"""What a party supplies to the delivery engine (:mod:`gateway.messaging.delivery`), and the
vocabulary both parties share with it: outcomes, retries, backoff, when deliveries are
recorded, and the watcher's events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from gateway.messaging.lanes import Lane

Outcome = Literal["sent", "retry", "held"]


class Row(Protocol):
    """What the engine reads of an outbox row."""

    @property
    def id(self) -> int: ...

    @property
    def attempts(self) -> int: ...


R = TypeVar("R", bound=Row)
B = TypeVar("B")
"""A transaction that several deliveries to an in-process destination share (their batch)."""
B_contra = TypeVar("B_contra", contravariant=True)


class Retry(Exception):
    """Raised by a transmitter for a row it does not deliver now, and that is no failure to
    log (a fault rule): due again after ``after`` seconds, the attempt not counted, or, without
    ``after``, as a failed attempt is (backoff)."""

    def __init__(self, reason: str, *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


@dataclass(frozen=True, slots=True)
class Backoff:
    """A failed row waits ``base`` * 2^(attempts-1) seconds, at most ``cap``."""

    base: float = 0.05
    cap: float = 60.0

    def after(self, attempts: int) -> float:
        return min(self.cap, self.base * float(2 ** max(0, attempts - 1)))


@dataclass(frozen=True, slots=True)
class Recording:
    """Deliveries are recorded at most ``within`` seconds after the oldest waiting, several in
    one transaction, or once ``most`` wait (None: no such bound); 0: each as it is reported."""

    within: float = 0.0
    most: int | None = None


class Sent(NamedTuple, Generic[R]):
    """A delivery to record: the row, and when it went (the party's clock)."""

    row: R
    at: Any


class OutboxRows(Protocol[R, B_contra]):
    """How a party's outbox rows are claimed and recorded."""

    def claim_due(self) -> tuple[list[R], bool]:
        """Due rows held by nobody, now held by the caller (up to the party's limit), and
        whether more may be due."""
        ...

    def release(self, rows: Sequence[R]) -> None:
        """No longer held here: rows due again (a retry), or let go (a held row)."""
        ...

    def record_sent(self, sent: Sequence[Sent[R]]) -> None:
        """Record deliveries, in one transaction, and hold those rows no longer."""
        ...

    def reschedule(
        self, row: R, delay: float, attempts: int, error: str, batch: B_contra | None
    ) -> None:
        """Make ``row`` due again in ``delay`` seconds (in ``batch``'s transaction, if any)."""
        ...

    def lane_of(self, row: R) -> str:
        """The destination whose lane delivers ``row``."""
        ...

    def label(self, row: R) -> str:
        """How the log names ``row`` (never its payload)."""
        ...

    def now(self) -> Any:
        """The time a delivery is recorded with (``sent_at``)."""
        ...


class Transmitter(Protocol[R, B_contra]):
    def transmit(self, row: R, lane: Lane[R], batch: B_contra | None) -> Outcome:
        """Transmit one row: ``sent``, or ``held``; raises :class:`Retry`, or any exception
        for a failed attempt (due again after the backoff). ``batch``: the transaction a lane
        delivering to an in-process destination opened for several rows."""
        ...


class InProcess(Protocol[B]):
    """Destinations served in this process (the connector's simulated banks): their lanes
    deliver what is queued several in one transaction, each delivery in a savepoint of it."""

    def in_process(self, dest: str) -> bool: ...

    def batch(self) -> AbstractContextManager[B]:
        """One write transaction for a lane's batch of deliveries."""
        ...

    def after(self, batch: B | None) -> None:
        """On a lane thread once its deliveries are reported: ``batch``'s committed work (None
        when one row was delivered alone)."""
        ...


class Rounds(Protocol[R]):
    """A party's own work in the dispatcher's rounds."""

    def linger(self) -> float | None:
        """How soon the next round must come for work of its own that waits, if any."""
        ...

    def prepare(self) -> int:
        """Before looking for due rows; how many rows it made."""
        ...

    def recorded(self, sent: Sequence[R], delivered: Sequence[R]) -> list[R]:
        """After a round took its reports (``delivered``: those sent) and recorded ``sent``:
        rows to let go (see :meth:`OutboxRows.release`)."""
        ...


Watcher = Callable[[str, Sequence[Any], str], None]
"""Called ``(event, rows, detail)`` on the thread of the event: ``handed_out`` (rows handed to
their lanes, ``detail`` ``lanes``, or kept by the thread to deliver itself, ``here``), ``batch``
(rows an in-process lane delivers in one transaction, ``detail`` the lane), ``delivered`` (one
row; ``detail`` its outcome: ``sent``, ``retry`` or ``held``; in a batch, as its own delivery
ended: the batch's transaction may yet fail)."""


__all__ = [
    "B",
    "Backoff",
    "InProcess",
    "OutboxRows",
    "Outcome",
    "R",
    "Recording",
    "Retry",
    "Rounds",
    "Row",
    "Sent",
    "Transmitter",
    "Watcher",
]
