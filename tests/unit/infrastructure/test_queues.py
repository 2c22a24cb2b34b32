"""The batcher between an event loop and its worker thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.messaging.queues import Answered, Batcher


class Refused(Exception):
    pass


def test_items_waiting_while_a_batch_runs_go_together_into_the_next() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def handle(items: list[int]) -> list[int | BaseException]:
        if not batches:
            started.set()
            release.wait(5)  # hold the first batch until the others are queued
        batches.append(items)
        return [Refused(str(i)) if i % 5 == 0 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(handle, name="test", limit=32)

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(batcher.submit(1))
        assert await asyncio.to_thread(started.wait, 5)  # the first batch runs
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 12)]
        await asyncio.sleep(0)  # each of them runs up to its wait: all are queued
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    assert batches == [[1], list(range(2, 12))]
    for i, result in enumerate(results, start=1):
        if i % 5 == 0:
            assert isinstance(result, Refused) and str(result) == str(i)
        else:
            assert result == i * 10


def test_a_failing_batch_fails_each_of_its_callers_and_the_thread_goes_on() -> None:
    calls: list[list[str]] = []

    def handle(items: list[str]) -> list[str | BaseException]:
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("database down")
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(handle, name="test")

    async def main() -> tuple[str, str]:
        with pytest.raises(RuntimeError, match="database down"):
            await batcher.submit("boom")
        return await batcher.submit("a"), await batcher.submit("b")

    try:
        assert asyncio.run(main()) == ("A", "B")
    finally:
        batcher.stop()


def test_a_handler_that_answers_for_the_wrong_number_of_items_fails_them_all() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: [], name="test")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="0 outcomes for 1 items"):
            await batcher.submit(1)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()


def test_at_most_limit_items_per_batch_and_several_threads_share_the_queue() -> None:
    sizes: list[int] = []
    lock = threading.Lock()

    def handle(items: list[int]) -> list[int]:
        with lock:
            sizes.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(handle, name="test", threads=3, limit=4)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(100)))

    try:
        assert asyncio.run(main()) == list(range(100))
    finally:
        batcher.stop()
    assert sum(sizes) == 100 and max(sizes) <= 4


def test_one_thread_always_stays_out_of_waits_on_another_party() -> None:
    """``then`` may block on another party only while another thread stays free: two
    parties posting to each other's batchers could otherwise all wait at once, each on the
    other's answer (the gateway and the connector did, until their 5 s HTTP timeouts)."""
    release = threading.Event()
    allowed: list[bool] = []
    lock = threading.Lock()

    def then(may_wait: bool) -> None:
        with lock:
            allowed.append(may_wait)
        if may_wait:
            release.wait(10)  # a post to the other party, answered only when released

    batcher: Batcher[int, int] = Batcher(
        lambda items: [i * 10 for i in items], name="test", threads=3, then=then
    )

    async def main() -> list[int]:
        # Two items: two threads answer them and then wait on the other party...
        first = [await batcher.submit(i) for i in (1, 2)]
        while len(allowed) < 2:
            await asyncio.sleep(0.01)
        # ...so the third thread, which takes what comes next, is not allowed to wait:
        # items keep being answered while the other two are blocked.
        more = [await asyncio.wait_for(batcher.submit(i), 5) for i in (3, 4, 5)]
        # ``then`` runs after an item's answer: wait for the last one's call, not its answer.
        while len(allowed) < 5:
            await asyncio.sleep(0.01)
        return first + more

    try:
        assert asyncio.run(main()) == [10, 20, 30, 40, 50]
        assert allowed == [True, True, False, False, False]
        release.set()
    finally:
        release.set()
        batcher.stop()


def test_a_single_thread_never_waits_on_another_party() -> None:
    allowed: list[bool] = []
    batcher: Batcher[int, int] = Batcher(lambda items: items, name="test", then=allowed.append)

    async def main() -> None:
        for i in range(3):
            await batcher.submit(i)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert allowed == [False, False, False]


def test_the_work_after_a_batch_gets_what_that_batch_produced() -> None:
    """A handle that returns ``Answered`` names the work that follows its own batch, after
    the callers' answers, on the same thread."""
    after: list[tuple[list[int], str, bool]] = []

    def handle(items: list[int]) -> Answered[int]:
        produced = [i * 10 for i in items]

        def then(may_wait: bool) -> None:
            after.append((produced, threading.current_thread().name, may_wait))

        return Answered(produced, then=then)

    batcher: Batcher[int, int] = Batcher(handle, name="test-answered")

    async def main() -> list[int]:
        return [await batcher.submit(i) for i in (1, 2)]

    try:
        assert asyncio.run(main()) == [10, 20]
    finally:
        batcher.stop()  # joins the thread: its work after the last batch is done
    assert [(p, name.startswith("test-answered-"), w) for p, name, w in after] == [
        ([10], True, False),
        ([20], True, False),
    ]
