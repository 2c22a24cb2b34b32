"""Opening wallets and changing their status, through the service on a fake unit of work."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.ledger import service
from gateway.ledger.errors import (
    IllegalTransition,
    NotAllowed,
    WalletExists,
    WalletNotEmpty,
    WalletNotFound,
)
from gateway.ledger.model import CreateLock, OpenWallet, SetWalletStatus, WalletKind, WalletStatus
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
    return FakeUnitOfWork()


def test_open_wallet_starts_open_and_empty(uow: FakeUnitOfWork) -> None:
    w = run_one(uow, OpenWallet(id="alice", kind=WalletKind.PARTICIPANT, owner="Alice"))
    assert (w.status, w.posted, w.reserved, w.currency) == (WalletStatus.OPEN, 0, 0, "KZT")
    assert w.created_at == NOW
    assert service.get_wallet(uow, "alice") == w


def test_open_wallet_replay_returns_the_same_wallet(uow: FakeUnitOfWork) -> None:
    op = OpenWallet(id="alice", kind=WalletKind.PARTICIPANT, owner="Alice")
    first = run_one(uow, op)
    fund(uow, "alice", 50)
    again = run_one(uow, op, now=NOW + timedelta(hours=1))
    assert again == first  # a replay answers what the original call answered
    assert uow.wallets["alice"].posted == 50  # and changes nothing


@pytest.mark.parametrize(
    "other",
    [
        OpenWallet(id="alice", kind=WalletKind.PARTICIPANT, owner="Mallory"),
        OpenWallet(id="alice", kind=WalletKind.ESCROW, owner="Alice"),
        OpenWallet(id="alice", kind=WalletKind.PARTICIPANT, owner="Alice", currency="USD"),
    ],
    ids=["owner", "kind", "currency"],
)
def test_open_wallet_with_a_different_body_is_du01(uow: FakeUnitOfWork, other: OpenWallet) -> None:
    run_one(uow, OpenWallet(id="alice", kind=WalletKind.PARTICIPANT, owner="Alice"))
    before = uow.wallets
    with pytest.raises(WalletExists) as exc:
        run_one(uow, other)
    assert exc.value.code == "DU01"
    assert uow.wallets == before


def test_opening_the_issuance_wallet_id_is_du01(uow: FakeUnitOfWork) -> None:
    with pytest.raises(WalletExists):
        run_one(uow, OpenWallet(id="issuance-KZT", kind=WalletKind.PARTICIPANT, owner="x"))


def test_freeze_and_unfreeze(uow: FakeUnitOfWork) -> None:
    open_wallets(uow, "alice")
    assert run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.FROZEN)).status == "frozen"
    # Setting the status it already has is a harmless replay and writes nothing.
    entries = len(uow.entries)
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.FROZEN))
    assert len(uow.entries) == entries
    assert run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.OPEN)).status == "open"


def test_closed_wallet_cannot_reopen(uow: FakeUnitOfWork) -> None:
    open_wallets(uow, "alice")
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.CLOSED))
    with pytest.raises(IllegalTransition):
        run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.OPEN))
    assert uow.wallets["alice"].status is WalletStatus.CLOSED


def test_closing_a_wallet_with_funds_is_refused(uow: FakeUnitOfWork) -> None:
    open_wallets(uow, "alice")
    fund(uow, "alice", 1)
    with pytest.raises(WalletNotEmpty) as exc:
        run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.CLOSED))
    assert exc.value.code == "WALLET_NOT_EMPTY"
    assert uow.wallets["alice"].status is WalletStatus.OPEN


def test_closing_a_wallet_that_awaits_a_pending_lock_is_refused(uow: FakeUnitOfWork) -> None:
    open_wallets(uow, "alice", "bob")
    fund(uow, "alice", 10)
    run_one(uow, CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=10))
    with pytest.raises(NotAllowed):
        run_one(uow, SetWalletStatus(id="bob", status=WalletStatus.CLOSED))
    assert uow.wallets["bob"].status is WalletStatus.OPEN


def test_closing_a_wallet_awaiting_a_lock_of_the_same_batch_is_refused(
    uow: FakeUnitOfWork,
) -> None:
    open_wallets(uow, "alice", "bob")
    fund(uow, "alice", 10)
    with pytest.raises(NotAllowed) as exc:
        run(
            uow,
            CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=10),
            SetWalletStatus(id="bob", status=WalletStatus.CLOSED),
        )
    assert exc.value.extra["operation_index"] == 1
    assert uow.locks == {}


def test_closing_a_wallet_with_reserved_funds_is_refused(uow: FakeUnitOfWork) -> None:
    open_wallets(uow, "alice", "bob")
    fund(uow, "alice", 10)
    run_one(uow, CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=10))
    with pytest.raises(WalletNotEmpty):
        run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.CLOSED))


def test_issuance_wallet_status_cannot_change(uow: FakeUnitOfWork) -> None:
    for status in WalletStatus:
        with pytest.raises(NotAllowed):
            run_one(uow, SetWalletStatus(id="issuance-KZT", status=status))


def test_status_of_an_unknown_wallet_is_ac01(uow: FakeUnitOfWork) -> None:
    with pytest.raises(WalletNotFound) as exc:
        run_one(uow, SetWalletStatus(id="ghost", status=WalletStatus.FROZEN))
    assert exc.value.code == "AC01"


def test_get_wallet_of_an_unknown_wallet_is_ac01(uow: FakeUnitOfWork) -> None:
    with pytest.raises(WalletNotFound):
        service.get_wallet(uow, "ghost")
    assert balances(uow) == {"issuance-KZT": (0, 0)}
