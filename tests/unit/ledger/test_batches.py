"""Batches (all or nothing), history pages, the invariant check and the retry loop."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.errors import IdempotencyConflict, InvalidInput, TransientError
from gateway.ledger import service
from gateway.ledger.errors import InsufficientFunds, InvalidAmount, WalletNotFound
from gateway.ledger.model import (
    CommitLock,
    CreateLock,
    Issue,
    LockState,
    MakeTransfer,
    OpenWallet,
    Redeem,
    ReleaseLock,
    WalletKind,
)
from tests.support.ledger_fakes import (
    NOW,
    FakeUnitOfWork,
    balances,
    fund,
    open_wallets,
    run,
    run_one,
)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    u = FakeUnitOfWork()
    open_wallets(u, "alice", "bob")
    fund(u, "alice", 100)
    return u


def t(tid: str, amount: int, debit: str = "alice", credit: str = "bob") -> MakeTransfer:
    return MakeTransfer(id=tid, debit_wallet_id=debit, credit_wallet_id=credit, amount=amount)


def test_batch_applies_in_order_and_returns_one_result_per_operation(uow: FakeUnitOfWork) -> None:
    results = run(
        uow,
        OpenWallet(id="carol", kind=WalletKind.EXCHANGE, owner="Carol"),
        Issue(id="i1", wallet_id="carol", amount=10),
        t("t1", 10, debit="carol", credit="bob"),
        t("t2", 5, debit="bob", credit="carol"),
    )
    assert [r.id for r in results] == ["carol", "i1", "t1", "t2"]
    assert balances(uow)["carol"] == (5, 0)
    assert balances(uow)["bob"] == (5, 0)
    assert service.check_invariants(uow).ok


def test_batch_is_all_or_nothing_and_names_the_failing_operation(uow: FakeUnitOfWork) -> None:
    before = (balances(uow), uow.transfers, uow.locks, len(uow.entries))
    with pytest.raises(InsufficientFunds) as exc:
        run(
            uow,
            OpenWallet(id="carol", kind=WalletKind.PARTICIPANT, owner="Carol"),
            t("t1", 60),
            CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=40),
            t("t2", 1),  # alice has 0 available now
            t("t3", 1),
        )
    assert exc.value.extra["operation_index"] == 3
    assert (balances(uow), uow.transfers, uow.locks, len(uow.entries)) == before
    assert "carol" not in uow.wallets


def test_validation_errors_name_their_operation_before_anything_runs(uow: FakeUnitOfWork) -> None:
    with pytest.raises(InvalidAmount) as exc:
        run(uow, t("t1", 10), t("t2", 0))
    assert exc.value.extra["operation_index"] == 1
    assert balances(uow)["bob"] == (0, 0)


def test_batch_with_a_duplicate_body_conflict_rolls_back(uow: FakeUnitOfWork) -> None:
    with pytest.raises(IdempotencyConflict) as exc:
        run(uow, t("t1", 10), t("t1", 11))
    assert exc.value.extra["operation_index"] == 1
    assert uow.transfers.keys() == {"fund-alice-0"}


def test_same_operation_twice_in_a_batch_has_one_effect(uow: FakeUnitOfWork) -> None:
    first, second = run(uow, t("t1", 10), t("t1", 10))
    assert first == second
    assert balances(uow)["bob"] == (10, 0)


def test_lock_created_and_committed_in_the_same_batch(uow: FakeUnitOfWork) -> None:
    created, committed = run(
        uow,
        CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=30),
        CommitLock(id="l1"),
    )
    assert created.state is LockState.PENDING
    assert committed.state is LockState.POSTED
    assert uow.locks["l1"].state is LockState.POSTED
    assert balances(uow)["alice"] == (70, 0)
    assert balances(uow)["bob"] == (30, 0)
    assert service.check_invariants(uow).ok


def test_lock_created_and_released_in_the_same_batch(uow: FakeUnitOfWork) -> None:
    run(
        uow,
        CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=30),
        ReleaseLock(id="l1"),
    )
    assert uow.locks["l1"].state is LockState.VOIDED
    assert balances(uow)["alice"] == (100, 0)
    assert service.check_invariants(uow).ok


def test_batch_that_fails_after_a_lock_leaves_no_lock(uow: FakeUnitOfWork) -> None:
    with pytest.raises(WalletNotFound):
        run(
            uow,
            CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=30),
            CommitLock(id="l1"),
            Redeem(id="r1", wallet_id="ghost", amount=1),
        )
    assert uow.locks == {}
    assert balances(uow)["alice"] == (100, 0)


def test_empty_batch_is_refused(uow: FakeUnitOfWork) -> None:
    with pytest.raises(InvalidInput):
        service.apply(uow, [], now=NOW)


# ------------------------------------------------------------------ history


def test_history_pages_through_a_wallet_in_order(uow: FakeUnitOfWork) -> None:
    for i in range(7):
        run_one(uow, t(f"t{i}", i + 1))
    seen = []
    cursor = None
    pages = 0
    while True:
        page = service.history(uow, "bob", cursor, 3)
        pages += 1
        seen.extend(page.entries)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.entries[-1].seq
        cursor = page.next_cursor
    assert pages == 3
    assert [e.ref_id for e in seen] == [f"t{i}" for i in range(7)]
    assert [e.posted_after for e in seen] == [1, 3, 6, 10, 15, 21, 28]
    assert all(e.wallet_id == "bob" for e in seen)
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


def test_history_last_full_page_has_no_next_cursor(uow: FakeUnitOfWork) -> None:
    run(uow, t("t1", 1), t("t2", 1))
    page = service.history(uow, "bob", None, 2)
    assert len(page.entries) == 2
    assert page.next_cursor is None


def test_history_refuses_bad_arguments_and_unknown_wallets(uow: FakeUnitOfWork) -> None:
    with pytest.raises(InvalidInput):
        service.history(uow, "bob", None, 0)
    with pytest.raises(InvalidInput):
        service.history(uow, "bob", -1, 10)
    with pytest.raises(WalletNotFound):
        service.history(uow, "ghost", None, 10)


def test_history_records_locks_and_status_changes(uow: FakeUnitOfWork) -> None:
    run_one(uow, CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=5))
    run_one(uow, ReleaseLock(id="l1"))
    ops = [
        (e.op, e.posted_delta, e.reserved_delta)
        for e in service.history(uow, "alice", None, 10).entries
    ]
    assert ops == [("issue", 100, 0), ("lock", 0, 5), ("lock_release", 0, -5)]


# ------------------------------------------------------------------ invariants


def test_invariants_hold_after_a_mix_of_operations(uow: FakeUnitOfWork) -> None:
    run(
        uow,
        t("t1", 10),
        CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=20),
        CreateLock(id="l2", debit_wallet_id="alice", credit_wallet_id="bob", amount=20),
        CommitLock(id="l1"),
        Redeem(id="r1", wallet_id="bob", amount=25),
    )
    report = service.check_invariants(uow)
    assert report.ok, report.violations
    assert report.total_posted == 0
    assert report.issued_minus_redeemed == 75


def test_invariants_report_a_tampered_balance(uow: FakeUnitOfWork) -> None:
    alice = uow.ledger.state.wallets["alice"]
    uow.ledger.state.wallets["alice"] = replace(alice, posted=alice.posted + 1)
    report = service.check_invariants(uow)
    assert not report.ok
    assert any("double entry" in v for v in report.violations)
    assert any("conservation" in v for v in report.violations)
    assert any("history" in v for v in report.violations)


def test_invariants_report_a_reserve_without_a_lock(uow: FakeUnitOfWork) -> None:
    alice = uow.ledger.state.wallets["alice"]
    uow.ledger.state.wallets["alice"] = replace(alice, reserved=5)
    report = service.check_invariants(uow)
    assert any("pending locks" in v for v in report.violations)


# ------------------------------------------------------------------ retries


def test_transient_failures_are_retried_with_a_single_effect(uow: FakeUnitOfWork) -> None:
    uow.fail_commits = 3
    run_one(uow, t("t1", 10))
    assert balances(uow)["bob"] == (10, 0)
    assert uow.rollbacks >= 3
    assert service.check_invariants(uow).ok


def test_exhausted_retries_reach_the_caller_and_change_nothing(uow: FakeUnitOfWork) -> None:
    uow.fail_commits = 10**6
    before = balances(uow)
    with pytest.raises(TransientError):
        service.retrying(uow, lambda: service.execute(uow, [t("t1", 10)], NOW), attempts=3)
    assert balances(uow) == before
