"""Group commit: many callers' single operations share one database transaction.

A durable commit costs an fsync (~0.1-0.2 ms on SQLite, more on PostgreSQL), and with one
transaction per operation that fsync, not the work, bounds throughput. The committer gathers the
operations that arrive while the previous group commits and applies them in ONE transaction:
first as one batch (:func:`gateway.ledger.service.execute`, a handful of statements for the whole
group); if any operation is refused, the group is rolled back and applied operation by
operation, still in one transaction, so that each caller gets its own outcome.

Each caller still gets exactly its own outcome, as if it had run alone after the ones before
it in the group:

- a refused operation (a domain error) has written nothing, because ``execute`` checks
  everything in memory before it writes; the others in the group go on;
- a transient conflict (deadlock, unique-key race) retries the whole group;
- any other failure (the database refusing a write, the commit failing) rolls the group back
  and runs each of its operations alone, so one bad operation cannot take others down.

With a single caller the group is one operation, committed in the caller's own thread, so latency
stays that of a plain commit.

Callers that wait for their answer and then submit again (a client's next request) come back
together, right after their group commits; the first of them back would lead a group of one
while the others were still waking, and groups alternated between all and one. So a leader that
finds fewer operations queued than the last group had, just after it committed, waits a moment
(``gather_s``, 1 ms) for them, as PostgreSQL's ``commit_delay`` waits for ``commit_siblings``.
A caller alone never waits, and callers that do not come back cost the next group that moment
once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.db import retrying, utcnow
from gateway.errors import GatewayError, TransientError, Unavailable
from gateway.ledger.model import Operation, Result
from gateway.ledger.service import UnitOfWork, apply_one, execute

log = logging.getLogger(__name__)


class _Refused(Exception):
    """An operation of the group was refused: the group must run operation by operation."""


def _held() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False, slots=True)
class _Pending:
    op: Operation
    now: datetime | None
    result: Result | None = None
    error: BaseException | None = None
    answered: bool = False
    lead: bool = False
    """Its caller is woken to commit the next group: the operation is still queued."""
    wake: threading.Lock = field(default_factory=_held)
    """Held until its caller is to wake: released with the outcome, or with the lead. (A bare
    lock: an ``Event`` per operation, its condition and its waiter's lock, cost several times
    as much, in the GIL that the callers coming back share.)"""

    def wait(self) -> None:
        self.wake.acquire()

    def answer(self) -> None:
        self.answered = True
        self.wake.release()

    def hand_lead(self) -> None:
        self.lead = True
        self.wake.release()


class GroupCommitter:
    """Thread-safe: call :meth:`submit` from any number of threads.

    There is no committer thread: the caller that finds no group in flight becomes the leader,
    takes everything queued (its own operation included), commits it and hands over. A lone
    caller therefore commits in its own thread, with no hand-off; callers that arrive while a
    group commits queue up and form the next group. Each caller waits on its own operation:
    a group's commit wakes its callers and the first one queued after it, which leads the next
    group (waking every waiting caller after each group, to find its own operation still
    queued, was ~7 % of the CPU of 16 callers on PostgreSQL).
    """

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        *,
        max_group: int = 256,
        gather_s: float = 0.001,
    ) -> None:
        self._uow_factory = uow_factory
        self._max_group = max_group
        self._gather_s = gather_s
        self._queue: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._leading = False
        self._stopping = False
        self._last_size = 0
        self._last_end = 0.0
        self._want = 0
        """While a leader gathers: the number of queued operations that ends its wait."""
        self._gathered = threading.Event()
        self.groups = 0
        self.operations = 0
        self.gathers = 0
        """Times a leader waited for the last group's callers to come back."""

    def submit(self, op: Operation, now: datetime | None = None) -> Result:
        """Apply ``op`` durably and return its result, or raise its error."""
        item = _Pending(op, now)
        with self._lock:
            if self._stopping:
                raise Unavailable("the ledger committer is stopping")
            self._queue.append(item)
            leading = not self._leading
            self._leading = True
            if self._want and len(self._queue) >= self._want:
                self._want = 0
                self._gathered.set()
        if not leading:
            item.wait()
            if item.lead:  # handed the lead; the operation is in the next group
                item.lead = False
                leading = True
        if leading:
            self._gather()
            with self._lock:
                # Its operation is the first queued: the queue was empty when it found no
                # leader, and a leader hands the lead to the first operation queued.
                group: list[_Pending] = []
                while self._queue and len(group) < self._max_group:
                    group.append(self._queue.popleft())
            assert group[0] is item
            try:
                self._commit_or_fail(group)
            finally:
                self._hand_over(len(group))
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _gather(self) -> None:
        """Before a leader takes its group: if the last group, which had several callers, has
        just committed and fewer operations are queued, wait up to ``gather_s`` for as many."""
        with self._lock:
            want = min(self._last_size, self._max_group)
            if (
                want < 2
                or len(self._queue) >= want
                or time.monotonic() - self._last_end > self._gather_s
            ):
                return
            self._want = want
            self._gathered.clear()
            self.gathers += 1
        self._gathered.wait(self._gather_s)
        with self._lock:
            self._want = 0

    def _hand_over(self, size: int) -> None:
        """After a group of ``size`` operations: the lead to the first operation queued, if
        any."""
        with self._lock:
            self._last_size, self._last_end = size, time.monotonic()
            if not self._queue:
                self._leading = False
                return
            successor = self._queue[0]
        successor.hand_lead()

    def stop(self) -> None:
        """Refuse new operations; those already queued are still committed by their callers."""
        with self._lock:
            self._stopping = True

    def _commit_or_fail(self, group: list[_Pending]) -> None:
        try:
            self._commit(group)
        except BaseException as exc:  # never leave a caller waiting
            log.exception("ledger group commit failed")
            for item in group:
                if not item.answered:
                    item.error = exc
                    item.answer()

    def _commit(self, group: list[_Pending]) -> None:
        uow = self._uow_factory()
        now = utcnow()

        def work_as_batch() -> list[tuple[Result | None, GatewayError | None]]:
            # The common case, every operation accepted: one batch, a handful of statements.
            try:
                results = execute(uow, [item.op for item in group], now)
            except TransientError:
                raise
            except GatewayError as exc:
                raise _Refused from exc
            return [(result, None) for result in results]

        def work() -> list[tuple[Result | None, GatewayError | None]]:
            outcomes: list[tuple[Result | None, GatewayError | None]] = []
            for item in group:
                try:
                    outcomes.append((execute(uow, [item.op], item.now or utcnow())[0], None))
                except TransientError:
                    raise
                except GatewayError as exc:
                    outcomes.append((None, exc))
            return outcomes

        try:
            try:
                if len(group) == 1 or any(item.now is not None for item in group):
                    raise _Refused
                outcomes = retrying(uow, work_as_batch)
            except _Refused:
                # Someone's operation is refused: give each its own outcome, one by one.
                outcomes = retrying(uow, work)
        except Exception:
            if len(group) == 1:
                raise
            log.warning(
                "group of %d failed as a whole; applying its operations one by one", len(group)
            )
            for item in group:
                try:
                    item.result = apply_one(uow, item.op, item.now)
                except BaseException as exc:
                    item.error = exc
                item.answer()
            return
        self.groups += 1
        self.operations += len(group)
        for item, (result, error) in zip(group, outcomes, strict=True):
            item.result, item.error = result, error
            item.answer()


__all__ = ["GroupCommitter"]
