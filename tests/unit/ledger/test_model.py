"""The pure domain model, tested directly: validation, state machines, fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.errors import InvalidInput
from gateway.ledger.errors import (
    ConditionMismatch,
    CurrencyMismatch,
    IllegalTransition,
    InsufficientFunds,
    InvalidAmount,
    InvalidId,
    LockAlreadyResolved,
    LockExpired,
    NotAllowed,
    SameWallet,
    WalletClosed,
    WalletFrozen,
    WalletNotEmpty,
)
from gateway.ledger.model import (
    LOCK_TRANSITIONS,
    MAX_AMOUNT,
    WALLET_TRANSITIONS,
    CommitLock,
    CreateLock,
    Issue,
    Lock,
    LockState,
    MakeTransfer,
    OpenWallet,
    Redeem,
    Wallet,
    WalletKind,
    WalletStatus,
    fulfilment_matches,
    issuance_wallet_id,
)
from tests.support.ledger_fakes import NOW

PREIMAGE = "11" * 32
CONDITION = hashlib.sha256(bytes.fromhex(PREIMAGE)).hexdigest()


def wallet(posted: int = 0, reserved: int = 0, status: WalletStatus = WalletStatus.OPEN) -> Wallet:
    return Wallet(
        id="w",
        kind=WalletKind.PARTICIPANT,
        owner="o",
        currency="KZT",
        status=status,
        posted=posted,
        reserved=reserved,
        created_at=NOW,
    )


def lock(**kw: object) -> Lock:
    base = Lock(
        id="l",
        debit_wallet_id="a",
        credit_wallet_id="b",
        amount=10,
        currency="KZT",
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        condition=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ amounts and ids


@pytest.mark.parametrize(
    "amount", [0, -1, True, False, 1.0, 1.5, MAX_AMOUNT + 1, "10", None], ids=repr
)
@pytest.mark.parametrize(
    "make",
    [
        lambda a: MakeTransfer(id="t", debit_wallet_id="a", credit_wallet_id="b", amount=a),
        lambda a: Issue(id="t", wallet_id="a", amount=a),
        lambda a: Redeem(id="t", wallet_id="a", amount=a),
        lambda a: CreateLock(id="t", debit_wallet_id="a", credit_wallet_id="b", amount=a),
    ],
    ids=["transfer", "issue", "redeem", "lock"],
)
def test_invalid_amounts_are_refused_with_am12(make, amount) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidAmount) as exc:
        make(amount).validate()
    assert exc.value.code == "AM12"


@pytest.mark.parametrize("amount", [1, MAX_AMOUNT])
def test_amounts_from_one_tiyn_to_max_are_valid(amount: int) -> None:
    MakeTransfer(id="t", debit_wallet_id="a", credit_wallet_id="b", amount=amount).validate()


@pytest.mark.parametrize("bad", ["", "-starts-with-dash", "has space", "x" * 129, "é"])
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidId):
        Issue(id=bad, wallet_id="a", amount=1).validate()
    with pytest.raises(InvalidId):
        Issue(id="ok", wallet_id=bad, amount=1).validate()


@pytest.mark.parametrize("currency", ["kzt", "KZ", "KZTT", ""])
def test_malformed_currency_is_refused(currency: str) -> None:
    with pytest.raises(InvalidInput):
        Issue(id="i", wallet_id="a", amount=1, currency=currency).validate()


def test_same_wallet_transfer_and_lock_are_refused() -> None:
    with pytest.raises(SameWallet):
        MakeTransfer(id="t", debit_wallet_id="a", credit_wallet_id="a", amount=1).validate()
    with pytest.raises(SameWallet):
        CreateLock(id="l", debit_wallet_id="a", credit_wallet_id="a", amount=1).validate()


def test_lock_needs_an_aware_expiry_and_a_hex_condition() -> None:
    with pytest.raises(InvalidInput):
        CreateLock(
            id="l",
            debit_wallet_id="a",
            credit_wallet_id="b",
            amount=1,
            expires_at=NOW.replace(tzinfo=None),
        ).validate()
    with pytest.raises(InvalidInput):
        CreateLock(
            id="l", debit_wallet_id="a", credit_wallet_id="b", amount=1, condition="zz" * 32
        ).validate()
    with pytest.raises(InvalidInput):
        CommitLock(id="l", fulfilment="ab").validate()


def test_issuance_wallets_cannot_be_opened() -> None:
    with pytest.raises(NotAllowed):
        OpenWallet(id="x", kind=WalletKind.ISSUANCE, owner="nbk").validate()


def test_issuance_wallet_id_names_the_currency() -> None:
    assert issuance_wallet_id("KZT") == "issuance-KZT"


# ------------------------------------------------------------------ fingerprints


def test_fingerprint_ignores_the_id_and_depends_on_the_body() -> None:
    a = MakeTransfer(id="t1", debit_wallet_id="a", credit_wallet_id="b", amount=5)
    assert a.fingerprint() == replace(a, id="t2").fingerprint()
    assert a.fingerprint() != replace(a, amount=6).fingerprint()
    assert a.fingerprint() != replace(a, reference="r").fingerprint()


def test_fingerprint_distinguishes_operations_with_equal_fields() -> None:
    assert (
        Issue(id="x", wallet_id="a", amount=1).fingerprint()
        != Redeem(id="x", wallet_id="a", amount=1).fingerprint()
    )


def test_lock_condition_case_does_not_change_the_fingerprint() -> None:
    base = CreateLock(id="l", debit_wallet_id="a", credit_wallet_id="b", amount=1)
    upper = replace(base, condition=CONDITION.upper()).fingerprint()
    assert upper == replace(base, condition=CONDITION).fingerprint()


# ------------------------------------------------------------------ wallets


def test_frozen_wallet_cannot_send_but_can_receive() -> None:
    frozen = wallet(posted=100, status=WalletStatus.FROZEN)
    with pytest.raises(WalletFrozen) as exc:
        frozen.debit(1, "KZT")
    assert exc.value.code == "AC06"
    with pytest.raises(WalletFrozen):
        frozen.reserve(1, "KZT")
    assert frozen.credit(5, "KZT").posted == 105


def test_closed_wallet_can_neither_send_nor_receive() -> None:
    closed = wallet(status=WalletStatus.CLOSED)
    with pytest.raises(WalletClosed) as exc:
        closed.credit(1, "KZT")
    assert exc.value.code == "AC04"
    with pytest.raises(WalletClosed):
        closed.debit(1, "KZT")


def test_settling_a_reserve_is_allowed_on_a_frozen_wallet() -> None:
    frozen = wallet(posted=100, reserved=30, status=WalletStatus.FROZEN)
    settled = frozen.settle_reserved(30)
    assert (settled.posted, settled.reserved) == (70, 0)


def test_wallet_refuses_the_wrong_currency_and_overdraft() -> None:
    w = wallet(posted=10, reserved=4)
    with pytest.raises(CurrencyMismatch) as exc:
        w.credit(1, "USD")
    assert exc.value.code == "AM11"
    with pytest.raises(InsufficientFunds) as exc2:
        w.debit(7, "KZT")
    assert exc2.value.code == "AM04"
    assert w.debit(6, "KZT").available == 0


def test_wallet_status_follows_its_transition_table() -> None:
    for start, allowed in WALLET_TRANSITIONS.items():
        for target in WalletStatus:
            w = wallet(status=start)
            if target is start:
                assert w.with_status(target) is w
            elif target in allowed:
                assert w.with_status(target).status is target
            else:
                with pytest.raises(IllegalTransition):
                    w.with_status(target)


@pytest.mark.parametrize(("posted", "reserved"), [(1, 0), (5, 5)])
def test_wallet_must_be_empty_to_close(posted: int, reserved: int) -> None:
    with pytest.raises(WalletNotEmpty):
        wallet(posted=posted, reserved=reserved).with_status(WalletStatus.CLOSED)


# ------------------------------------------------------------------ locks


def test_lock_resolves_at_most_once() -> None:
    assert all(not LOCK_TRANSITIONS[s] for s in LockState if s is not LockState.PENDING)
    posted = lock().post(None, NOW)
    assert posted.state is LockState.POSTED
    assert posted.resolved_at == NOW
    with pytest.raises(LockAlreadyResolved):
        posted.void(NOW)
    voided = lock().void(NOW)
    with pytest.raises(LockAlreadyResolved) as exc:
        voided.post(None, NOW)
    assert exc.value.code == "LOCK_RESOLVED"


def test_lock_past_its_expiry_can_only_expire() -> None:
    at_expiry = NOW + timedelta(minutes=5)
    with pytest.raises(LockExpired):
        lock().post(None, at_expiry)
    with pytest.raises(LockExpired):
        lock().void(at_expiry)
    expired = lock().expire(at_expiry)
    assert expired.state is LockState.EXPIRED
    with pytest.raises(LockExpired) as exc:
        expired.post(None, at_expiry)
    assert exc.value.code == "LOCK_EXPIRED"
    with pytest.raises(LockExpired):
        expired.void(at_expiry)


def test_lock_cannot_expire_early_or_without_an_expiry() -> None:
    with pytest.raises(IllegalTransition):
        lock().expire(NOW)
    with pytest.raises(IllegalTransition):
        lock(expires_at=None).expire(NOW + timedelta(days=365))


def test_conditional_lock_posts_only_with_the_preimage() -> None:
    conditional = lock(condition=CONDITION)
    assert conditional.post(PREIMAGE, NOW).fulfilment == PREIMAGE
    for wrong in (None, "22" * 32):
        with pytest.raises(ConditionMismatch):
            conditional.post(wrong, NOW)


def test_unconditional_lock_ignores_a_fulfilment() -> None:
    assert lock().post(PREIMAGE, NOW).fulfilment is None


def test_fulfilment_matching() -> None:
    assert fulfilment_matches(CONDITION, PREIMAGE)
    assert fulfilment_matches(CONDITION.upper(), PREIMAGE.upper())
    assert not fulfilment_matches(CONDITION, "22" * 32)
    assert not fulfilment_matches(CONDITION, "not hex")
