"""Issue, redeem and transfer through the service on a fake unit of work, and every refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.errors import GatewayError, IdempotencyConflict, InvalidInput
from gateway.ledger import service
from gateway.ledger.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    NotAllowed,
    SameWallet,
    WalletClosed,
    WalletFrozen,
    WalletNotFound,
)
from gateway.ledger.model import (
    MAX_AMOUNT,
    CreateLock,
    Issue,
    MakeTransfer,
    Redeem,
    SetWalletStatus,
    TransferKind,
    WalletStatus,
)
from tests.support.ledger_fakes import NOW, FakeUnitOfWork, balances, fund, open_wallets, run_one


@pytest.fixture
def uow() -> FakeUnitOfWork:
    u = FakeUnitOfWork()
    open_wallets(u, "alice", "bob")
    open_wallets(u, "dollar", currency="USD")
    fund(u, "alice", 100)
    return u


def refused(uow: FakeUnitOfWork, op: object, error: type[GatewayError], code: str) -> None:
    """``op`` raises ``error`` with ``code`` and changes nothing."""
    before = (balances(uow), uow.transfers, uow.locks, len(uow.entries))
    with pytest.raises(error) as exc:
        run_one(uow, op)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert (balances(uow), uow.transfers, uow.locks, len(uow.entries)) == before


# ------------------------------------------------------------------ issue and redeem


def test_issue_moves_new_dt_from_the_issuance_wallet() -> None:
    uow = FakeUnitOfWork()
    open_wallets(uow, "alice")
    t = run_one(uow, Issue(id="i1", wallet_id="alice", amount=500, reference="mint"))
    assert (t.kind, t.debit_wallet_id, t.credit_wallet_id) == (
        TransferKind.ISSUE,
        "issuance-KZT",
        "alice",
    )
    assert balances(uow) == {"issuance-KZT": (-500, 0), "alice": (500, 0)}
    report = service.check_invariants(uow)
    assert report.ok, report.violations
    assert report.issued_minus_redeemed == 500


def test_redeem_returns_dt_to_the_issuance_wallet(uow: FakeUnitOfWork) -> None:
    t = run_one(uow, Redeem(id="r1", wallet_id="alice", amount=30))
    assert (t.kind, t.debit_wallet_id, t.credit_wallet_id) == (
        TransferKind.REDEEM,
        "alice",
        "issuance-KZT",
    )
    assert uow.wallets["alice"].posted == 70
    assert uow.wallets["issuance-KZT"].posted == -70
    assert service.check_invariants(uow).issued_minus_redeemed == 70


def test_redeem_more_than_available_is_am04(uow: FakeUnitOfWork) -> None:
    refused(uow, Redeem(id="r1", wallet_id="alice", amount=101), InsufficientFunds, "AM04")


def test_redeem_from_the_issuance_wallet_is_refused(uow: FakeUnitOfWork) -> None:
    refused(uow, Redeem(id="r1", wallet_id="issuance-KZT", amount=1), NotAllowed, "NOT_ALLOWED")


def test_issue_into_the_issuance_wallet_is_refused(uow: FakeUnitOfWork) -> None:
    # Regression: this used to credit the issuance wallet out of nothing.
    refused(uow, Issue(id="i1", wallet_id="issuance-KZT", amount=7), NotAllowed, "NOT_ALLOWED")
    assert service.check_invariants(uow).ok


def test_issue_into_a_frozen_wallet_is_allowed(uow: FakeUnitOfWork) -> None:
    run_one(uow, SetWalletStatus(id="bob", status=WalletStatus.FROZEN))
    run_one(uow, Issue(id="i1", wallet_id="bob", amount=5))
    assert uow.wallets["bob"].posted == 5


def test_issue_beyond_the_largest_representable_balance_is_refused() -> None:
    uow = FakeUnitOfWork()
    open_wallets(uow, "a", "b")
    run_one(uow, Issue(id="i1", wallet_id="a", amount=MAX_AMOUNT))
    before = balances(uow)
    with pytest.raises(InvalidInput):
        run_one(uow, Issue(id="i2", wallet_id="b", amount=1))
    assert balances(uow) == before


# ------------------------------------------------------------------ transfers


def test_transfer_moves_posted_funds_and_records_history(uow: FakeUnitOfWork) -> None:
    t = run_one(
        uow, MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=40)
    )
    assert (t.amount, t.currency, t.created_at) == (40, "KZT", NOW)
    assert uow.wallets["alice"].posted == 60
    assert uow.wallets["bob"].posted == 40
    ops = [(e.wallet_id, e.op, e.posted_delta, e.posted_after) for e in uow.entries[-2:]]
    assert ops == [("alice", "transfer", -40, 60), ("bob", "transfer", 40, 40)]
    assert service.get_transfer(uow, "t1") == t
    assert service.check_invariants(uow).ok


def test_transfer_of_the_whole_available_balance(uow: FakeUnitOfWork) -> None:
    run_one(uow, MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=100))
    assert uow.wallets["alice"].available == 0


def test_transfer_replay_returns_the_first_result_without_moving_funds_again(
    uow: FakeUnitOfWork,
) -> None:
    op = MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=40)
    first = run_one(uow, op)
    after_first = balances(uow)
    again = run_one(uow, op, now=NOW + timedelta(hours=1))
    assert again == first
    assert balances(uow) == after_first


@pytest.mark.parametrize(
    "other",
    [
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=41),
        MakeTransfer(
            id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=40, reference="x"
        ),
        Issue(id="t1", wallet_id="bob", amount=40),
        Redeem(id="t1", wallet_id="alice", amount=40),
    ],
    ids=["amount", "reference", "issue", "redeem"],
)
def test_transfer_id_reused_with_a_different_body_is_du01(
    uow: FakeUnitOfWork, other: MakeTransfer | Issue | Redeem
) -> None:
    run_one(uow, MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=40))
    refused(uow, other, IdempotencyConflict, "DU01")


def test_replay_is_checked_before_the_current_state(uow: FakeUnitOfWork) -> None:
    """A replay succeeds even when the operation would now be refused (funds gone)."""
    op = MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=100)
    first = run_one(uow, op)
    assert run_one(uow, op) == first


@pytest.mark.parametrize("amount", [0, -5, True, 2.0, MAX_AMOUNT + 1], ids=repr)
def test_invalid_amount_is_am12(uow: FakeUnitOfWork, amount: int) -> None:
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=amount),
        InvalidAmount,
        "AM12",
    )
    refused(uow, Issue(id="i1", wallet_id="bob", amount=amount), InvalidAmount, "AM12")
    refused(uow, Redeem(id="r1", wallet_id="alice", amount=amount), InvalidAmount, "AM12")


@pytest.mark.parametrize(("debit", "credit"), [("ghost", "bob"), ("alice", "ghost")])
def test_transfer_with_an_unknown_wallet_is_ac01(
    uow: FakeUnitOfWork, debit: str, credit: str
) -> None:
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id=debit, credit_wallet_id=credit, amount=1),
        WalletNotFound,
        "AC01",
    )


def test_issue_to_an_unknown_wallet_is_ac01(uow: FakeUnitOfWork) -> None:
    refused(uow, Issue(id="i1", wallet_id="ghost", amount=1), WalletNotFound, "AC01")


def test_closed_wallet_can_neither_send_nor_receive(uow: FakeUnitOfWork) -> None:
    run_one(uow, SetWalletStatus(id="bob", status=WalletStatus.CLOSED))
    to_bob = MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=1)
    refused(uow, to_bob, WalletClosed, "AC04")
    refused(uow, Issue(id="i1", wallet_id="bob", amount=1), WalletClosed, "AC04")
    # alice, funded, closed after emptying: cannot send either (AC04 before AM04)
    run_one(uow, Redeem(id="r-all", wallet_id="alice", amount=100))
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.CLOSED))
    refused(uow, Redeem(id="r1", wallet_id="alice", amount=1), WalletClosed, "AC04")


def test_frozen_wallet_cannot_send_but_can_receive(uow: FakeUnitOfWork) -> None:
    run_one(uow, SetWalletStatus(id="alice", status=WalletStatus.FROZEN))
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=1),
        WalletFrozen,
        "AC06",
    )
    refused(uow, Redeem(id="r1", wallet_id="alice", amount=1), WalletFrozen, "AC06")
    run_one(uow, Issue(id="i1", wallet_id="bob", amount=5))
    run_one(uow, MakeTransfer(id="t2", debit_wallet_id="bob", credit_wallet_id="alice", amount=5))
    assert uow.wallets["alice"].posted == 105


def test_transfer_in_another_currency_is_am11(uow: FakeUnitOfWork) -> None:
    refused(
        uow,
        MakeTransfer(
            id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=1, currency="USD"
        ),
        CurrencyMismatch,
        "AM11",
    )


def test_transfer_between_wallets_of_different_currencies_is_am11(uow: FakeUnitOfWork) -> None:
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="dollar", amount=1),
        CurrencyMismatch,
        "AM11",
    )


def test_transfer_beyond_available_is_am04(uow: FakeUnitOfWork) -> None:
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=101),
        InsufficientFunds,
        "AM04",
    )


def test_reserved_funds_are_not_available_for_transfers(uow: FakeUnitOfWork) -> None:
    run_one(uow, CreateLock(id="l1", debit_wallet_id="alice", credit_wallet_id="bob", amount=70))
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=31),
        InsufficientFunds,
        "AM04",
    )
    run_one(uow, MakeTransfer(id="t2", debit_wallet_id="alice", credit_wallet_id="bob", amount=30))


def test_transfer_to_the_same_wallet_is_refused(uow: FakeUnitOfWork) -> None:
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="alice", amount=1),
        SameWallet,
        "SAME_WALLET",
    )


@pytest.mark.parametrize(("debit", "credit"), [("issuance-KZT", "bob"), ("alice", "issuance-KZT")])
def test_transfer_involving_the_issuance_wallet_is_refused(
    uow: FakeUnitOfWork, debit: str, credit: str
) -> None:
    refused(
        uow,
        MakeTransfer(id="t1", debit_wallet_id=debit, credit_wallet_id=credit, amount=1),
        NotAllowed,
        "NOT_ALLOWED",
    )
