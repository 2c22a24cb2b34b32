"""Two-phase locks through the service on a fake unit of work: reserve, commit, release, expire."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from gateway.errors import GatewayError, IdempotencyConflict, InvalidInput
from gateway.ledger import service
from gateway.ledger.errors import (
    ConditionMismatch,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    LockAlreadyResolved,
    LockExpired,
    LockNotFound,
    NotAllowed,
    WalletClosed,
    WalletFrozen,
    WalletNotFound,
)
from gateway.ledger.model import (
    CommitLock,
    CreateLock,
    LockState,
    ReleaseLock,
    SetWalletStatus,
    WalletStatus,
)
from tests.support.ledger_fakes import NOW, FakeUnitOfWork, balances, fund, open_wallets, run_one

PREIMAGE = "ab" * 32
CONDITION = hashlib.sha256(bytes.fromhex(PREIMAGE)).hexdigest()
EXPIRY = NOW + timedelta(minutes=10)


@pytest.fixture
def uow() -> FakeUnitOfWork:
    u = FakeUnitOfWork()
    open_wallets(u, "alice", "bob", "carol")
    fund(u, "alice", 100)
    return u


def lock(
    lock_id: str = "l1", amount: int = 60, condition: str | None = None, **kw: object
) -> CreateLock:
    return CreateLock(
        id=lock_id,
        debit_wallet_id=str(kw.pop("debit", "alice")),
        credit_wallet_id=str(kw.pop("credit", "bob")),
        amount=amount,
        expires_at=EXPIRY,
        condition=condition,
        **kw,  # type: ignore[arg-type]
    )


def refused(uow: FakeUnitOfWork, op: object, error: type[GatewayError], code: str, **kw: object):  # type: ignore[no-untyped-def]
    before = (balances(uow), uow.locks, len(uow.entries))
    with pytest.raises(error) as exc:
        run_one(uow, op, **kw)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert (balances(uow), uow.locks, len(uow.entries)) == before
    return exc.value


def test_lock_reserves_without_moving_posted_funds(uow: FakeUnitOfWork) -> None:
    lk = run_one(uow, lock())
    assert (lk.state, lk.amount, lk.expires_at, lk.condition) == (
        LockState.PENDING,
        60,
        EXPIRY,
        None,
    )
    alice = uow.wallets["alice"]
    assert (alice.posted, alice.reserved, alice.available) == (100, 60, 40)
    assert uow.wallets["bob"].posted == 0
    assert service.get_lock(uow, "l1") == lk
    assert service.check_invariants(uow).ok


def test_commit_without_condition_pays_the_beneficiary(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    lk = run_one(uow, CommitLock(id="l1"), now=NOW + timedelta(minutes=1))
    assert (lk.state, lk.resolved_at, lk.fulfilment) == (
        LockState.POSTED,
        NOW + timedelta(minutes=1),
        None,
    )
    assert balances(uow)["alice"] == (40, 0)
    assert balances(uow)["bob"] == (60, 0)
    assert service.check_invariants(uow).ok


def test_commit_with_the_right_preimage_pays_the_beneficiary(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock(condition=CONDITION))
    lk = run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE))
    assert (lk.state, lk.fulfilment) == (LockState.POSTED, PREIMAGE)
    assert balances(uow)["bob"] == (60, 0)


def test_condition_and_fulfilment_are_case_insensitive(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock(condition=CONDITION.upper()))
    lk = run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE.upper()))
    assert lk.state is LockState.POSTED


@pytest.mark.parametrize("fulfilment", [None, "cd" * 32], ids=["missing", "wrong"])
def test_commit_with_a_missing_or_wrong_preimage_is_refused(
    uow: FakeUnitOfWork, fulfilment: str | None
) -> None:
    run_one(uow, lock(condition=CONDITION))
    refused(
        uow, CommitLock(id="l1", fulfilment=fulfilment), ConditionMismatch, "CONDITION_MISMATCH"
    )
    assert uow.locks["l1"].state is LockState.PENDING
    # the right one still works afterwards
    run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE))


def test_release_returns_the_reserve(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    lk = run_one(uow, ReleaseLock(id="l1"))
    assert lk.state is LockState.VOIDED
    assert balances(uow)["alice"] == (100, 0)
    assert balances(uow)["bob"] == (0, 0)
    assert service.check_invariants(uow).ok


def test_commit_replay_returns_the_same_lock_and_pays_once(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock(condition=CONDITION))
    first = run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE))
    after = balances(uow)
    assert run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE), now=EXPIRY) == first
    assert balances(uow) == after


def test_commit_replay_without_condition_ignores_the_fulfilment(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    first = run_one(uow, CommitLock(id="l1"))
    assert run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE)) == first


def test_commit_of_a_posted_lock_with_another_fulfilment_is_refused(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock(condition=CONDITION))
    run_one(uow, CommitLock(id="l1", fulfilment=PREIMAGE))
    refused(uow, CommitLock(id="l1", fulfilment="cd" * 32), LockAlreadyResolved, "LOCK_RESOLVED")


def test_release_replay_returns_the_same_lock_and_releases_once(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    first = run_one(uow, ReleaseLock(id="l1"))
    after = (balances(uow), len(uow.entries))
    assert run_one(uow, ReleaseLock(id="l1"), now=EXPIRY) == first
    assert (balances(uow), len(uow.entries)) == after


def test_commit_refused_after_release(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    run_one(uow, ReleaseLock(id="l1"))
    err = refused(uow, CommitLock(id="l1"), LockAlreadyResolved, "LOCK_RESOLVED")
    assert err.extra["state"] == "voided"


def test_release_refused_after_commit(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    run_one(uow, CommitLock(id="l1"))
    err = refused(uow, ReleaseLock(id="l1"), LockAlreadyResolved, "LOCK_RESOLVED")
    assert err.extra["state"] == "posted"


def test_lock_replay_returns_the_original_answer(uow: FakeUnitOfWork) -> None:
    first = run_one(uow, lock())
    assert run_one(uow, lock(), now=NOW + timedelta(minutes=1)) == first
    assert balances(uow)["alice"] == (100, 60)  # reserved once


def test_lock_replay_after_resolution_changes_nothing(uow: FakeUnitOfWork) -> None:
    first = run_one(uow, lock())
    run_one(uow, CommitLock(id="l1"))
    after = balances(uow)
    replayed = run_one(uow, lock(), now=EXPIRY + timedelta(days=1))
    assert (replayed.id, replayed.amount) == (first.id, first.amount)
    assert balances(uow) == after
    assert uow.locks["l1"].state is LockState.POSTED


@pytest.mark.parametrize(
    "other",
    [lock(amount=61), lock(condition=CONDITION), lock(credit="carol"), lock(reference="r")],
    ids=["amount", "condition", "beneficiary", "reference"],
)
def test_lock_id_reused_with_a_different_body_is_du01(
    uow: FakeUnitOfWork, other: CreateLock
) -> None:
    run_one(uow, lock())
    refused(uow, other, IdempotencyConflict, "DU01")


# ------------------------------------------------------------------ expiry


@pytest.mark.parametrize(
    "op", [CommitLock(id="l1"), ReleaseLock(id="l1")], ids=["commit", "release"]
)
def test_resolving_a_lock_past_its_expiry_is_refused(
    uow: FakeUnitOfWork, op: CommitLock | ReleaseLock
) -> None:
    run_one(uow, lock())
    refused(uow, op, LockExpired, "LOCK_EXPIRED", now=EXPIRY)
    assert uow.locks["l1"].state is LockState.PENDING  # until expire_locks runs


def test_expire_locks_frees_the_reserve(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock("l1", 30))
    run_one(uow, lock("l2", 20))
    run_one(uow, CreateLock(id="l3", debit_wallet_id="alice", credit_wallet_id="bob", amount=10))
    assert service.expire_locks(uow, now=EXPIRY - timedelta(seconds=1)) == []
    expired = service.expire_locks(uow, now=EXPIRY)
    assert sorted(lk.id for lk in expired) == ["l1", "l2"]
    assert all(lk.state is LockState.EXPIRED and lk.resolved_at == EXPIRY for lk in expired)
    assert balances(uow)["alice"] == (100, 10)  # l3 has no expiry and stays pending
    assert uow.locks["l3"].state is LockState.PENDING
    assert service.expire_locks(uow, now=EXPIRY + timedelta(days=1)) == []
    assert service.check_invariants(uow).ok


def test_expire_locks_honours_its_limit(uow: FakeUnitOfWork) -> None:
    for i in range(3):
        run_one(uow, lock(f"l{i}", 10))
    assert len(service.expire_locks(uow, now=EXPIRY, limit=2)) == 2
    assert len(service.expire_locks(uow, now=EXPIRY, limit=2)) == 1


def test_expire_locks_leaves_resolved_locks_alone(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock("l1", 10))
    run_one(uow, lock("l2", 10))
    run_one(uow, CommitLock(id="l1"))
    run_one(uow, ReleaseLock(id="l2"))
    assert service.expire_locks(uow, now=EXPIRY) == []


@pytest.mark.parametrize(
    "op", [CommitLock(id="l1"), ReleaseLock(id="l1")], ids=["commit", "release"]
)
def test_expired_lock_cannot_be_resolved(uow: FakeUnitOfWork, op: CommitLock | ReleaseLock) -> None:
    run_one(uow, lock())
    service.expire_locks(uow, now=EXPIRY)
    refused(uow, op, LockExpired, "LOCK_EXPIRED", now=EXPIRY)


def test_lock_expiring_in_the_past_is_refused(uow: FakeUnitOfWork) -> None:
    refused(uow, lock(), InvalidInput, "INVALID_INPUT", now=EXPIRY)


# ------------------------------------------------------------------ refusals at creation


def test_lock_beyond_available_is_am04(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock("l1", 60))
    refused(uow, lock("l2", 41), InsufficientFunds, "AM04")
    run_one(uow, lock("l3", 40))


@pytest.mark.parametrize("amount", [0, -1, True, 1.5], ids=repr)
def test_lock_with_an_invalid_amount_is_am12(uow: FakeUnitOfWork, amount: int) -> None:
    refused(uow, lock(amount=amount), InvalidAmount, "AM12")


@pytest.mark.parametrize("kw", [{"debit": "ghost"}, {"credit": "ghost"}], ids=["debit", "credit"])
def test_lock_with_an_unknown_wallet_is_ac01(uow: FakeUnitOfWork, kw: dict[str, str]) -> None:
    refused(uow, lock(**kw), WalletNotFound, "AC01")


def test_lock_in_another_currency_is_am11(uow: FakeUnitOfWork) -> None:
    refused(uow, lock(currency="USD"), CurrencyMismatch, "AM11")


@pytest.mark.parametrize("kw", [{"debit": "issuance-KZT"}, {"credit": "issuance-KZT"}])
def test_lock_involving_the_issuance_wallet_is_refused(
    uow: FakeUnitOfWork, kw: dict[str, str]
) -> None:
    refused(uow, lock(**kw), NotAllowed, "NOT_ALLOWED")


def test_unknown_lock_cannot_be_resolved(uow: FakeUnitOfWork) -> None:
    refused(uow, CommitLock(id="ghost"), LockNotFound, "LOCK_NOT_FOUND")
    refused(uow, ReleaseLock(id="ghost"), LockNotFound, "LOCK_NOT_FOUND")
    with pytest.raises(LockNotFound):
        service.get_lock(uow, "ghost")


def test_frozen_wallet_cannot_lock_but_can_be_the_beneficiary(uow: FakeUnitOfWork) -> None:
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.FROZEN))
    refused(uow, lock(), WalletFrozen, "AC06")
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.OPEN))
    run_one(uow, SetWalletStatus(id="bob", status=WalletStatus.FROZEN))
    run_one(uow, lock())
    run_one(uow, CommitLock(id="l1"))
    assert balances(uow)["bob"] == (60, 0)


def test_closed_wallet_cannot_be_the_beneficiary(uow: FakeUnitOfWork) -> None:
    run_one(uow, SetWalletStatus(id="bob", status=WalletStatus.CLOSED))
    refused(uow, lock(), WalletClosed, "AC04")


def test_commit_of_a_lock_made_before_the_freeze_is_allowed(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.FROZEN))
    assert run_one(uow, CommitLock(id="l1")).state is LockState.POSTED
    assert balances(uow)["alice"] == (40, 0)
    assert balances(uow)["bob"] == (60, 0)


def test_release_of_a_lock_made_before_the_freeze_is_allowed(uow: FakeUnitOfWork) -> None:
    run_one(uow, lock())
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.FROZEN))
    assert run_one(uow, ReleaseLock(id="l1")).state is LockState.VOIDED
    assert balances(uow)["alice"] == (100, 0)
