"""The delivery engine both parties share (``gateway.messaging.delivery``), on fakes: a party's
outbox rows held in memory, a transmitter that does what each test says, lanes and the
dispatcher real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.messaging.delivery import (
    Backoff,
    DeliveryEngine,
    Lane,
    LaneSettings,
    Outcome,
    Recording,
    Retry,
    Sent,
)
from tests.support.waiting import wait_for


@dataclass(frozen=True, slots=True)
class Msg:
    id: int
    dest: str = "far"
    attempts: int = 0


@dataclass
class Batch:
    """A fake transaction a lane's deliveries share."""

    rows: list[int] = field(default_factory=list)


class Rows:
    """A party's outbox in memory: rows due, rows held, what was recorded and rescheduled."""

    def __init__(self, *due: Msg) -> None:
        self.due = list(due)
        self.held: set[int] = set()
        self.recorded: list[list[tuple[int, Any]]] = []
        self.rescheduled: list[tuple[int, float, int, str, Batch | None]] = []
        self.released: list[int] = []
        self.claims = 0
        self.clock = 100
        self.lock = threading.Lock()

    def claim_due(self) -> tuple[list[Msg], bool]:
        with self.lock:
            self.claims += 1
            rows = [row for row in self.due if row.id not in self.held]
            self.held.update(row.id for row in rows)
            return rows, False

    def release(self, rows: Sequence[Msg]) -> None:
        with self.lock:
            self.held.difference_update(row.id for row in rows)
            self.released += [row.id for row in rows]

    def record_sent(self, sent: Sequence[Sent[Msg]]) -> None:
        with self.lock:
            self.recorded.append([(s.row.id, s.at) for s in sent])
            self.held.difference_update(s.row.id for s in sent)
            self.due = [row for row in self.due if row.id not in {s.row.id for s in sent}]

    def reschedule(
        self, row: Msg, delay: float, attempts: int, error: str, batch: Batch | None
    ) -> None:
        with self.lock:
            self.rescheduled.append((row.id, delay, attempts, error, batch))

    def lane_of(self, row: Msg) -> str:
        return row.dest

    def label(self, row: Msg) -> str:
        return f"message {row.id}"

    def now(self) -> int:
        return self.clock


class Transmitter:
    """Does for each row what ``plan`` says (``sent`` if nothing): an outcome, an exception to
    raise, or a callable run first (to block, say). Records who transmitted what."""

    def __init__(self, plan: dict[int, Any] | None = None) -> None:
        self.plan = plan or {}
        self.calls: list[tuple[int, str, Batch | None]] = []
        self.lock = threading.Lock()

    def transmit(self, row: Msg, lane: Lane[Msg], batch: Batch | None) -> Outcome:
        with self.lock:
            self.calls.append((row.id, threading.current_thread().name, batch))
        step = self.plan.get(row.id, "sent")
        if callable(step):
            step = step()
        if isinstance(step, BaseException):
            raise step
        if batch is not None:
            batch.rows.append(row.id)
        outcome: Outcome = step
        return outcome


class Local:
    """Destination ``sim`` is served in process: its lane's rows share a batch."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.after_batches: list[Batch | None] = []

    def in_process(self, dest: str) -> bool:
        return dest == "sim"

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        batch = Batch()
        yield batch
        if self.fail:
            raise RuntimeError("the batch's commit failed")

    def after(self, batch: Batch | None) -> None:
        self.after_batches.append(batch)


class Rounds:
    """Counts the dispatcher's rounds; a round waits at ``gate`` while it is closed."""

    def __init__(self) -> None:
        self.rounds = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[tuple[list[int], list[int]]] = []
        self.let_go: list[Msg] = []

    def linger(self) -> float | None:
        return None

    def prepare(self) -> int:
        self.rounds += 1
        self.entered.set()
        self.gate.wait(10)
        return 0

    def recorded(self, sent: Sequence[Msg], delivered: Sequence[Msg]) -> list[Msg]:
        if sent or delivered:
            self.seen.append(([r.id for r in sent], [r.id for r in delivered]))
        let_go, self.let_go = self.let_go, []
        return let_go


def _engine(
    rows: Rows,
    transmitter: Transmitter,
    *,
    recording: Recording | None = None,
    local: Local | None = None,
    rounds: Rounds | None = None,
    seconds: list[float] | None = None,
    threads: int = 1,
    idle_seconds: float = 60.0,
) -> DeliveryEngine[Msg, Batch]:
    clock = seconds if seconds is not None else [0.0]
    return DeliveryEngine(
        "test",
        rows,
        transmitter,
        lanes=LaneSettings(threads=threads, idle_seconds=idle_seconds),
        recording=recording or Recording(),
        backoff=Backoff(base=0.05, cap=0.3),
        poll=3600,
        in_process=local,
        rounds=rounds,
        monotonic=lambda: clock[0],
    )


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base=0.05, cap=0.3)
    assert [backoff.after(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert backoff.after(0) == 0.05


def test_a_row_delivered_here_is_recorded_with_the_time_it_went() -> None:
    rows, sender = Rows(Msg(1)), Transmitter()
    engine = _engine(rows, sender)
    claimed, _ = rows.claim_due()
    assert engine.deliver_here(claimed) == 1
    assert rows.recorded == [[(1, 100)]]  # no dispatcher, recording at once: by this thread
    assert rows.held == set()
    assert sender.calls == [(1, threading.current_thread().name, None)]


def test_a_failed_attempt_is_due_again_after_the_backoff_and_let_go() -> None:
    rows = Rows(Msg(1, attempts=2))
    engine = _engine(rows, Transmitter({1: ConnectionError("down")}))
    claimed, _ = rows.claim_due()
    assert engine.deliver_here(claimed) == 0
    assert rows.rescheduled == [(1, 0.2, 3, "down", None)]
    assert rows.recorded == [] and rows.released == [1] and rows.held == set()


def test_a_retry_the_transmitter_asks_for_waits_as_it_says_or_as_a_failure_would() -> None:
    rows = Rows(Msg(1, attempts=1), Msg(2, attempts=1))
    plan = {1: Retry("fault: delay", after=0.7), 2: Retry("fault: drop")}
    engine = _engine(rows, Transmitter(plan))
    claimed, _ = rows.claim_due()
    assert engine.deliver_here(claimed) == 0
    # A delay is not an attempt; a drop counts as one, with its backoff.
    assert rows.rescheduled == [(1, 0.7, 1, "fault: delay", None), (2, 0.1, 2, "fault: drop", None)]


def test_a_held_row_stays_held_until_the_party_lets_it_go() -> None:
    rows, rounds = Rows(Msg(1), Msg(2)), Rounds()
    engine = _engine(rows, Transmitter({1: "held"}), rounds=rounds)
    claimed, _ = rows.claim_due()
    assert engine.deliver_here(claimed) == 1
    assert rows.held == {1}  # neither recorded nor due again
    assert rounds.seen == [([2], [2])]
    rounds.let_go = [claimed[0]]  # say, something was delivered after it
    engine.record()
    assert rows.held == set() and rows.released == [1] and engine._due


def test_deliveries_are_recorded_together_once_the_oldest_is_due_or_enough_wait() -> None:
    seconds = [0.0]
    rows = Rows(*(Msg(i) for i in range(1, 6)))
    engine = _engine(rows, Transmitter(), recording=Recording(within=0.05, most=3), seconds=seconds)
    claimed, _ = rows.claim_due()
    engine.deliver_here(claimed[:1])
    seconds[0] = 0.04
    engine.deliver_here(claimed[1:2])
    assert rows.recorded == []  # the oldest waited 40 ms
    seconds[0] = 0.05
    engine.deliver_here(claimed[2:3])
    assert [[i for i, _ in r] for r in rows.recorded] == [[1, 2, 3]]  # 50 ms: all of them
    engine.deliver_here(claimed[3:5])
    assert len(rows.recorded) == 1
    seconds[0] = 0.06
    engine.deliver_here([Msg(6)])  # the third waiting: recorded without waiting longer
    assert [[i for i, _ in r] for r in rows.recorded] == [[1, 2, 3], [4, 5, 6]]
    assert engine.record(force=True) == 0


def test_a_pair_whose_lanes_are_idle_is_kept_and_more_go_to_the_lanes() -> None:
    rows, sender = Rows(Msg(1, "a"), Msg(2, "b"), Msg(3, "a")), Transmitter()
    engine = _engine(rows, sender)
    seen: list[tuple[str, list[int], str]] = []
    engine.watch(lambda event, rs, detail: seen.append((event, [r.id for r in rs], detail)))
    claimed, _ = rows.claim_due()
    kept: list[Msg] = []
    assert engine.hand_out(claimed[:2], keep=kept) == 2
    assert kept == claimed[:2] and seen == [("handed_out", [1, 2], "here")]
    engine.deliver_here(kept)
    try:
        assert engine.hand_out(claimed, keep=kept) == 3  # three: to the lanes
        wait_for(lambda: len(sender.calls) == 5, "five rows sent")
        assert ("handed_out", [1, 2, 3], "lanes") in seen
        lanes = {who for row_id, who, _ in sender.calls[2:]}
        assert lanes == {"test-send-a-0", "test-send-b-0"}
    finally:
        engine.stop_lanes()


def test_a_lane_whose_threads_took_nothing_for_a_while_ends_them_and_starts_again() -> None:
    rows, sender = Rows(Msg(1, "a"), Msg(2, "a")), Transmitter()
    engine = _engine(rows, sender, threads=2, idle_seconds=0.1)
    try:
        claimed, _ = rows.claim_due()
        engine.hand_out(claimed[:1])
        wait_for(lambda: len(sender.calls) == 1, "the first row sent")
        lane = engine.lanes.get("a")
        first = list(lane.threads)
        assert len(first) == 2
        wait_for(lambda: not lane.threads, "the lane's threads ended")  # a webhook host gone quiet
        for thread in first:
            thread.join(5)
            assert not thread.is_alive()
        engine.hand_out(claimed[1:])  # the next row starts them again
        wait_for(lambda: len(sender.calls) == 2, "the second row sent")
        assert len(lane.threads) == 2 and not set(lane.threads) & set(first)
    finally:
        engine.stop_lanes()
    assert sorted(i for r in rows.recorded for i, _ in r) == [1, 2]


def test_rows_put_on_a_lane_while_its_threads_end_are_all_delivered() -> None:
    """Rows handed out one by one about as often as the lane's threads give up waiting: each is
    taken, by a thread still waiting or by one started for it."""
    n = 200
    rows, sender = Rows(*(Msg(i, "a") for i in range(1, n + 1))), Transmitter()
    engine = _engine(rows, sender, idle_seconds=0.001)
    try:
        claimed, _ = rows.claim_due()
        for row in claimed:
            engine.hand_out([row])
            time.sleep(0.001)  # about the idle time: threads end and start all along
        wait_for(lambda: len(sender.calls) == n, f"{n} rows sent")
    finally:
        engine.stop_lanes()


def test_a_slow_destination_holds_up_its_own_lane_only() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        return "sent" if release.wait(10) else "retry"

    rows = Rows(Msg(1, "slow"), Msg(2, "slow"), Msg(3, "quick"))
    sender = Transmitter({1: slow})
    engine = _engine(rows, sender)
    delivered = threading.Event()
    engine.watch(lambda event, rs, _d: delivered.set() if event == "delivered" else None)
    try:
        claimed, _ = rows.claim_due()
        engine.hand_out(claimed)
        assert entered.wait(10) and delivered.wait(10)  # the quick one went meanwhile
        assert sorted(row_id for row_id, *_ in sender.calls) == [1, 3]
        release.set()
        wait_for(lambda: len(sender.calls) == 3, "three rows sent")
    finally:
        release.set()
        engine.stop_lanes()
    assert sorted(i for r in rows.recorded for i, _ in r) == [1, 2, 3]


def test_an_in_process_lane_delivers_what_is_queued_in_one_batch() -> None:
    rows, local = Rows(*(Msg(i, "sim") for i in range(1, 5))), Local()
    gate = threading.Event()
    sender = Transmitter({1: lambda: "sent" if gate.wait(10) else "retry"})
    engine = _engine(rows, sender, local=local)
    batches: list[list[int]] = []
    engine.watch(
        lambda event, rs, _d: batches.append([r.id for r in rs]) if event == "batch" else None
    )
    try:
        claimed, _ = rows.claim_due()
        engine.hand_out(claimed[:1])  # the lane thread takes it alone, and waits in it
        wait_for(lambda: len(sender.calls) == 1, "one row sent")
        engine.hand_out(claimed[1:])  # queued meanwhile: taken together
        gate.set()
        wait_for(lambda: len(sender.calls) == 4, "four rows sent")
        wait_for(lambda: len(local.after_batches) == 2, "two batches done")
    finally:
        gate.set()
        engine.stop_lanes()
    assert batches == [[2, 3, 4]]
    first, second = local.after_batches
    assert first is None and second is not None and second.rows == [2, 3, 4]
    assert all(batch is second for row_id, _, batch in sender.calls[1:])


def test_deliveries_to_a_remote_destination_go_before_an_in_process_ones_here() -> None:
    rows, sender = Rows(Msg(1, "sim"), Msg(2, "far")), Transmitter()
    engine = _engine(rows, sender, local=Local())
    claimed, _ = rows.claim_due()
    engine.deliver_here(claimed)
    assert [row_id for row_id, *_ in sender.calls] == [2, 1]


def test_a_failed_batch_delivers_none_and_all_are_due_again_at_once() -> None:
    rows, local = Rows(*(Msg(i, "sim") for i in range(1, 4))), Local(fail=True)
    gate = threading.Event()
    sender = Transmitter({1: lambda: "sent" if gate.wait(10) else "retry"})
    engine = _engine(rows, sender, local=local)
    try:
        claimed, _ = rows.claim_due()
        engine.hand_out(claimed[:1])
        wait_for(lambda: len(sender.calls) == 1, "one row sent")
        engine.hand_out(claimed[1:])
        gate.set()
        wait_for(lambda: len(local.after_batches) == 2, "two batches done")
    finally:
        gate.set()
        engine.stop_lanes()
    assert sorted(rows.released) == [2, 3] and rows.rescheduled == []
    assert [i for r in rows.recorded for i, _ in r] == [1]


def test_the_dispatcher_is_woken_only_when_it_would_not_look_soon() -> None:
    """While it runs, the dispatcher records: a delivery wakes it when nothing waited to be
    recorded (it may be asleep for its whole poll), not while deliveries wait (it records
    within ``Recording.within`` anyway); a row to hand out again wakes it at once."""
    rows, rounds = Rows(), Rounds()
    engine = _engine(rows, Transmitter(), recording=Recording(within=3600), rounds=rounds)
    engine.start("test-dispatcher")
    try:
        wait_for(lambda: rounds.rounds == 1, "the first round")
        rounds.gate.clear()
        engine.wake(due=False)
        # Held in its round: the wake-ups stay to be seen.
        wait_for(lambda: rounds.rounds == 2, "the second round")
        wake = engine._wake

        row = Msg(1)  # delivered by another thread, say
        engine.report([(row, "sent")])  # nothing waited
        assert wake.is_set()
        wake.clear()
        engine.record()  # as its next round does: that delivery now waits
        assert rows.recorded == []
        engine.report([(row, "sent")])
        assert not wake.is_set()
        engine.report([(row, "retry")])
        assert wake.is_set()
    finally:
        rounds.gate.set()
        engine.stop()
        engine.join()
    assert not engine.running
    assert [[i for i, _ in r] for r in rows.recorded] == [[1, 1]]  # at its end, what waited


def test_the_dispatcher_looks_for_due_rows_only_when_told_some_may_be() -> None:
    rows, rounds = Rows(), Rounds()
    sender = Transmitter()
    engine = _engine(rows, sender, rounds=rounds)
    engine.start("test-dispatcher")
    try:
        wait_for(lambda: rows.claims == 1, "the first claim")  # its first round looks
        engine.wake(due=False)
        wait_for(lambda: rounds.rounds == 2, "the second round")
        assert rows.claims == 1
        rows.due.append(Msg(7))
        engine.wake()
        wait_for(lambda: len(sender.calls) == 1, "one row sent")  # claimed and handed to its lane
        assert rows.claims == 2 and sender.calls[0][1] == "test-send-far-0"
        wait_for(lambda: rows.recorded == [[(7, 100)]], "the row recorded by the dispatcher")
    finally:
        engine.stop()
        engine.join()
        engine.stop_lanes()


@pytest.mark.parametrize("outcome", ["sent", "retry", "held"])
def test_the_watcher_is_told_each_outcome(outcome: Outcome) -> None:
    plan: dict[int, Any] = {1: ConnectionError("down") if outcome == "retry" else outcome}
    rows = Rows(Msg(1))
    engine = _engine(rows, Transmitter(plan))
    seen: list[tuple[str, list[int], str]] = []
    engine.watch(lambda event, rs, detail: seen.append((event, [r.id for r in rs], detail)))
    claimed, _ = rows.claim_due()
    engine.deliver_here(claimed)
    assert seen == [("delivered", [1], outcome)]
