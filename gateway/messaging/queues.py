"""Taking work off a thread's queue in batches, and handing it there from an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.threads import start_thread

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def take_queued(source: queue.SimpleQueue[T | None], first: T, limit: int) -> tuple[list[T], bool]:
    """``first`` and whatever else is queued right now, up to ``limit`` items, never waiting
    for more: under load one batch (one commit) for many, no delay at all when there is one.
    Returns the items and whether the stop sentinel (``None``) was met."""
    items = [first]
    while len(items) < limit:
        try:
            more = source.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return items, True
        items.append(more)
    return items, False


@dataclass(frozen=True, slots=True)
class Answered(Generic[R]):
    """What a :class:`Batcher`'s ``handle`` may return instead of bare outcomes: the outcomes,
    and the work that follows them for this batch (in place of the batcher's own ``then``),
    so that what the batch produced reaches that work as an argument."""

    outcomes: Sequence[R | BaseException]
    then: Callable[[bool], None] | None = None


class _Job(Generic[T, R]):
    __slots__ = ("future", "item", "loop")

    def __init__(self, item: T, loop: asyncio.AbstractEventLoop) -> None:
        self.item = item
        self.loop = loop
        self.future: asyncio.Future[R] = loop.create_future()


def _settle(jobs: list[tuple[asyncio.Future[R], R | BaseException]]) -> None:
    for future, outcome in jobs:
        if future.done():  # the caller went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class Batcher(Generic[T, R]):
    """Blocking work for coroutines, done in batches on threads of its own.

    ``await batcher.submit(item)`` queues the item; a worker thread takes every item queued at
    that moment (up to ``limit``) and calls ``handle(items)`` once for all of them, which
    returns one outcome per item (a value, or an exception to raise in that caller). The
    callers are woken with one call into their event loop per batch.

    What it saves over a thread hop per call (``anyio.to_thread.run_sync``): two wake-ups
    per item (~75 µs of CPU each here) and, when ``handle`` commits, a transaction per item.
    Under load the queue is rarely empty, so items share both; alone, an item waits for no
    one.

    ``then``, if given, is called on the same thread once the callers have been woken: work
    that follows the answers, done without handing it to yet another thread (a thread that
    wakes takes more CPU for its next steps than the switch costs: ``ops/bench/wakeup.py``).
    Its failures are logged; the callers have their answers already. Its argument,
    ``may_wait``, says whether it may block on another party (post to it and wait for the
    answer): true only while another of the batcher's threads stays out of such waits, free to
    take new items. Two parties whose threads post to each other's batchers could otherwise
    all wait on each other's answers at once, until their HTTP timeouts (with
    ``threads=1``, never). A ``handle`` that returns :class:`Answered` names the work that
    follows its own batch, with what the batch produced bound to it.
    """

    def __init__(
        self,
        handle: Callable[[list[T]], Sequence[R | BaseException] | Answered[R]],
        *,
        name: str,
        threads: int = 1,
        limit: int = 32,
        then: Callable[[bool], None] | None = None,
    ) -> None:
        self._handle = handle
        self._then = then
        self._name = name
        self._threads_wanted = max(1, threads)
        self._limit = max(1, limit)
        self._queue: queue.SimpleQueue[_Job[T, R] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._waiting = 0  # threads in a ``then`` that was allowed to wait on another party

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for i in range(self._threads_wanted):
                self._threads.append(start_thread(self._work, f"{self._name}-{i}"))

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout=10)

    async def submit(self, item: T) -> R:
        if not self._threads:
            self.start()
        job: _Job[T, R] = _Job(item, asyncio.get_running_loop())
        self._queue.put(job)
        return await job.future

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = take_queued(self._queue, first, self._limit)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[_Job[T, R]]) -> None:
        then = self._then
        try:
            result = self._handle([job.item for job in jobs])
            if isinstance(result, Answered):
                outcomes, then = list(result.outcomes), result.then
            else:
                outcomes = list(result)
            if len(outcomes) != len(jobs):
                raise RuntimeError(f"{self._name}: {len(outcomes)} outcomes for {len(jobs)} items")
        except BaseException as exc:  # every caller learns of it; the thread carries on
            log.exception("%s: a batch of %d failed", self._name, len(jobs))
            outcomes, then = [exc] * len(jobs), self._then
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], R | BaseException]]]
        by_loop = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, outcome))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)
        if then is not None:
            with self._lock:
                may_wait = self._waiting < self._threads_wanted - 1
                self._waiting += may_wait
            try:
                then(may_wait)
            except Exception:
                log.exception("%s: the work after a batch failed", self._name)
            finally:
                if may_wait:
                    with self._lock:
                        self._waiting -= 1


__all__ = ["Answered", "Batcher", "take_queued"]
