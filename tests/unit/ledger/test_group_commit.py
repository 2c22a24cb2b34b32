"""Group commit on the fake unit of work: one transaction for many callers, each caller its own
outcome."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from gateway.errors import IdempotencyConflict
from gateway.ledger.errors import InsufficientFunds
from gateway.ledger.group import GroupCommitter, _Pending
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, Transfer, WalletKind
from gateway.ledger.service import apply
from tests.support.ledger_fakes import FakeUnitOfWork


def _funded() -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    apply(
        uow,
        [
            OpenWallet("a", WalletKind.PARTICIPANT, "A"),
            OpenWallet("b", WalletKind.PARTICIPANT, "B"),
            Issue("fund", "a", 100),
        ],
    )
    return uow


def _group(*ops: Any) -> list[_Pending]:
    return [_Pending(op, None) for op in ops]


def test_a_group_commits_once_and_a_refused_operation_writes_nothing() -> None:
    uow = _funded()
    commits_before = uow.commits
    committer = GroupCommitter(lambda: uow)
    group = _group(
        MakeTransfer("t1", "a", "b", 60),
        MakeTransfer("t2", "a", "b", 60),  # only 40 left after t1
        MakeTransfer("t3", "a", "b", 40),
        MakeTransfer("t1", "a", "b", 60),  # replay of t1 in the same group
        MakeTransfer("t1", "a", "b", 1),  # same id, other body
    )
    committer._commit(group)
    assert uow.commits == commits_before + 1
    assert all(item.answered for item in group)
    assert isinstance(group[0].result, Transfer)
    assert isinstance(group[1].error, InsufficientFunds)
    assert isinstance(group[2].result, Transfer)
    assert group[3].result == group[0].result
    assert isinstance(group[4].error, IdempotencyConflict)
    assert uow.wallets["a"].posted == 0
    assert uow.wallets["b"].posted == 100


def test_a_transient_failure_retries_the_whole_group() -> None:
    uow = _funded()
    uow.fail_commits = 2
    group = _group(MakeTransfer("t1", "a", "b", 10), MakeTransfer("t2", "a", "b", 10))
    GroupCommitter(lambda: uow)._commit(group)
    assert [type(i.result) for i in group] == [Transfer, Transfer]
    assert uow.wallets["b"].posted == 20


class _CommitBreaksOnce(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.break_next = False

    def commit(self) -> None:
        if self.break_next:
            self.break_next = False
            raise RuntimeError("the database refused the write")
        super().commit()


def test_a_group_the_database_refuses_is_applied_one_by_one() -> None:
    uow = _CommitBreaksOnce()
    apply(
        uow,
        [
            OpenWallet("a", WalletKind.PARTICIPANT, "A"),
            OpenWallet("b", WalletKind.PARTICIPANT, "B"),
            Issue("fund", "a", 100),
        ],
    )
    uow.break_next = True
    group = _group(MakeTransfer("t1", "a", "b", 10), MakeTransfer("t2", "a", "b", 500))
    GroupCommitter(lambda: uow)._commit(group)
    assert isinstance(group[0].result, Transfer)
    assert isinstance(group[1].error, InsufficientFunds)
    assert uow.wallets["b"].posted == 10


def test_submit_returns_the_result_or_raises_the_error() -> None:
    uow = _funded()
    committer = GroupCommitter(lambda: uow)
    try:
        assert isinstance(committer.submit(MakeTransfer("t1", "a", "b", 10)), Transfer)
        with pytest.raises(InsufficientFunds):
            committer.submit(MakeTransfer("t2", "a", "b", 1000))
    finally:
        committer.stop()
    assert uow.wallets["b"].posted == 10


class _SlowCommits(FakeUnitOfWork):
    """A commit that takes a moment, so that callers queue behind it."""

    def commit(self) -> None:
        time.sleep(0.002)
        super().commit()


def test_queued_callers_lead_the_next_groups_in_turn() -> None:
    """Each group's commit wakes its callers and hands the lead to the first caller queued
    after it, whose group (at most three here) starts with its own operation. Every caller
    gets its own outcome, every operation is applied once."""
    uow = _SlowCommits()
    apply(uow, [OpenWallet("a", WalletKind.PARTICIPANT, "A"), Issue("fund", "a", 100)])
    apply(uow, [OpenWallet("b", WalletKind.PARTICIPANT, "B")])
    committer = GroupCommitter(lambda: uow, max_group=3)
    outcomes: dict[str, object] = {}

    def caller(n: int) -> None:
        for i in range(25):
            op = MakeTransfer(f"t-{n}-{i}", "a", "b", 1)
            try:
                outcomes[op.id] = committer.submit(op)
            except InsufficientFunds as exc:
                outcomes[op.id] = exc

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a caller was never woken"
    committer.stop()
    done = [o for o in outcomes.values() if isinstance(o, Transfer)]
    assert len(outcomes) == committer.operations == 200
    assert len(done) == 100 == uow.wallets["b"].posted
    assert all(o.id == key for key, o in outcomes.items() if isinstance(o, Transfer))
    assert 200 / 3 <= committer.groups < 200  # callers shared groups, never more than three


def _closed_loop(committer: GroupCommitter, callers: int, each: int) -> None:
    """``callers`` threads, each submitting its next operation as soon as the last returns,
    all starting together."""
    start = threading.Barrier(callers)

    def caller(n: int) -> None:
        start.wait()
        for i in range(each):
            committer.submit(MakeTransfer(f"t-{n}-{i}", "a", "b", 1))

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a caller was never woken"
    committer.stop()


def test_callers_that_come_back_after_their_group_form_the_next_group_together() -> None:
    """The first caller back after a group leads the next; it waits for the others, so the
    groups do not alternate between all the callers and one."""
    uow = _SlowCommits()
    apply(uow, [OpenWallet("a", WalletKind.PARTICIPANT, "A"), Issue("fund", "a", 1000)])
    apply(uow, [OpenWallet("b", WalletKind.PARTICIPANT, "B")])
    committer = GroupCommitter(lambda: uow, gather_s=0.05)
    _closed_loop(committer, callers=8, each=20)
    assert committer.operations == 160 == uow.wallets["b"].posted
    assert committer.gathers > 0
    assert committer.operations / committer.groups >= 6  # 7-8; alternating 8 and 1, ~4.2


def test_a_caller_alone_never_waits_to_gather() -> None:
    uow = _funded()
    committer = GroupCommitter(lambda: uow, gather_s=10.0)
    _closed_loop(committer, callers=1, each=20)
    assert committer.operations == committer.groups == 20
    assert committer.gathers == 0


def test_callers_that_do_not_come_back_delay_the_next_group_once_by_at_most_gather_s() -> None:
    uow = _funded()
    committer = GroupCommitter(lambda: uow, gather_s=0.2)
    committer._hand_over(3)  # a group of three has just committed
    started = time.monotonic()
    assert isinstance(committer.submit(MakeTransfer("t1", "a", "b", 1)), Transfer)
    assert 0.15 <= time.monotonic() - started < 10
    assert committer.gathers == 1
    committer.submit(MakeTransfer("t2", "a", "b", 1))  # the last group had one caller
    assert committer.gathers == 1
    committer.stop()
