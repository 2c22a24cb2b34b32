"""The ledger model's refusals say exactly what and which (a client reads ``detail`` and the
wallet or lock id in the problem body), its resolved locks keep every field, and a command's
fingerprint is a fixed canonical form (stored fingerprints must keep matching replays).

These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import GatewayError, InvalidInput
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
    MAX_AMOUNT,
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
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(seconds=30)
SECRET = bytes(range(32))
COND = hashlib.sha256(SECRET).hexdigest()
ID_RULE = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


def wallet(status: WalletStatus = WalletStatus.OPEN, posted: int = 500) -> Wallet:
    return Wallet("w-1", WalletKind.PARTICIPANT, "bank", "KZT", status, posted, 100, T0, "fp")


def refusal(err: pytest.ExceptionInfo[GatewayError]) -> tuple[str, dict[str, object]]:
    return err.value.detail, err.value.extra


# ----------------------------------------------------------------------------- wallets


@pytest.mark.parametrize("move", ["debit", "reserve"])
def test_a_closed_or_frozen_wallet_refuses_to_send_naming_itself(move: str) -> None:
    for status, error, detail in (
        (WalletStatus.CLOSED, WalletClosed, "wallet w-1 is closed"),
        (WalletStatus.FROZEN, WalletFrozen, "wallet w-1 is frozen"),
    ):
        with pytest.raises(error) as err:
            getattr(wallet(status), move)(1, "KZT")
        assert refusal(err) == (detail, {"wallet_id": "w-1"})


def test_a_closed_wallet_refuses_to_receive_naming_itself() -> None:
    with pytest.raises(WalletClosed) as err:
        wallet(WalletStatus.CLOSED, posted=0).credit(1, "KZT")
    assert refusal(err) == ("wallet w-1 is closed", {"wallet_id": "w-1"})


def test_insufficient_funds_says_what_is_available_and_what_was_needed() -> None:
    with pytest.raises(InsufficientFunds) as err:
        wallet().debit(401, "KZT")
    assert refusal(err) == ("wallet w-1 has 400 available, needs 401", {"wallet_id": "w-1"})
    assert wallet().debit(400, "KZT").posted == 100


@pytest.mark.parametrize("move", ["debit", "credit", "reserve"])
def test_a_currency_mismatch_names_both_currencies(move: str) -> None:
    with pytest.raises(CurrencyMismatch) as err:
        getattr(wallet(), move)(1, "AED")
    assert refusal(err) == ("wallet w-1 holds KZT, not AED", {"wallet_id": "w-1"})


def test_status_changes_refused_say_why() -> None:
    closed = wallet(WalletStatus.CLOSED, posted=0)
    with pytest.raises(IllegalTransition) as illegal:
        closed.with_status(WalletStatus.OPEN)
    assert refusal(illegal) == ("wallet w-1 cannot go from closed to open", {})
    with pytest.raises(WalletNotEmpty) as not_empty:
        wallet().with_status(WalletStatus.CLOSED)
    assert refusal(not_empty) == ("wallet w-1 must be empty to close", {"wallet_id": "w-1"})


# ----------------------------------------------------------------------------- locks


def lock(condition: str | None = COND, expires_at: datetime | None = T1) -> Lock:
    return Lock(
        "l-1", "w-1", "w-2", 100, "KZT", T0, expires_at, condition, reference="ref", fingerprint="f"
    )


def resolved(state: LockState, at: datetime, fulfilment: str | None) -> Lock:
    return Lock(
        "l-1",
        "w-1",
        "w-2",
        100,
        "KZT",
        T0,
        T1,
        COND,
        state,
        at,
        fulfilment,
        reference="ref",
        fingerprint="f",
    )


def test_a_resolved_lock_keeps_every_field_and_records_when() -> None:
    at = T0 + timedelta(seconds=1)
    assert lock().post(SECRET.hex(), at) == resolved(LockState.POSTED, at, SECRET.hex())
    assert lock().void(at) == resolved(LockState.VOIDED, at, None)
    assert lock().expire(T1) == resolved(LockState.EXPIRED, T1, None)


def test_an_expired_lock_refuses_posting_and_voiding_naming_itself_and_when() -> None:
    for attempt in (lambda: lock().post(SECRET.hex(), T1), lambda: lock().void(T1)):
        with pytest.raises(LockExpired) as err:
            attempt()
        assert refusal(err) == ("lock l-1 expired at 2026-01-02 03:04:35+00:00", {"lock_id": "l-1"})
    expired = lock().expire(T1)
    for attempt in (lambda: expired.post(SECRET.hex(), T1), lambda: expired.void(T1)):
        with pytest.raises(LockExpired) as err:
            attempt()
        assert refusal(err) == ("lock l-1 expired at 2026-01-02 03:04:35+00:00", {"lock_id": "l-1"})


def test_a_resolved_lock_refuses_a_second_resolution_saying_how_it_ended() -> None:
    voided = lock().void(T0)
    with pytest.raises(LockAlreadyResolved) as err:
        voided.post(SECRET.hex(), T0)
    assert refusal(err) == ("lock l-1 is already voided", {"lock_id": "l-1", "state": "voided"})


def test_a_wrong_fulfilment_names_the_lock() -> None:
    with pytest.raises(ConditionMismatch) as err:
        lock().post("00" * 32, T0)
    detail = "fulfilment does not hash to the condition of lock l-1"
    assert refusal(err) == (detail, {"lock_id": "l-1"})


def test_a_lock_not_yet_at_its_expiry_cannot_be_expired() -> None:
    with pytest.raises(IllegalTransition) as err:
        lock().expire(T1 - timedelta(microseconds=1))
    assert refusal(err) == ("lock l-1 has not reached its expiry", {})


# ----------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("command", "error", "detail"),
    [
        (MakeTransfer("bad id", "a", "b", 1), InvalidId, f"id must match {ID_RULE}"),
        (MakeTransfer("t", "-a", "b", 1), InvalidId, f"debit_wallet_id must match {ID_RULE}"),
        (MakeTransfer("t", "a", "-b", 1), InvalidId, f"credit_wallet_id must match {ID_RULE}"),
        (MakeTransfer("t", "a", "a", 1), SameWallet, "debit and credit wallet must differ"),
        (
            MakeTransfer("t", "a", "b", True),
            InvalidAmount,
            "amount must be an integer number of tiyn",
        ),
        (
            MakeTransfer("t", "a", "b", 0),
            InvalidAmount,
            f"amount must be between 1 and {MAX_AMOUNT} tiyn",
        ),
        (
            MakeTransfer("t", "a", "b", 1, "kzt"),
            InvalidInput,
            "currency must be an ISO 4217 code such as KZT",
        ),
        (Issue("i", "-w", 1), InvalidId, f"wallet_id must match {ID_RULE}"),
        (Redeem("r", "-w", 1), InvalidId, f"wallet_id must match {ID_RULE}"),
        (CreateLock("l", "-a", "b", 1), InvalidId, f"debit_wallet_id must match {ID_RULE}"),
        (CreateLock("l", "a", "-b", 1), InvalidId, f"credit_wallet_id must match {ID_RULE}"),
        (CreateLock("l", "a", "a", 1), SameWallet, "debit and credit wallet must differ"),
        (
            CreateLock("l", "a", "b", 1, condition="ab"),
            InvalidInput,
            "condition must be 64 hexadecimal characters (32 bytes)",
        ),
        (
            CreateLock("l", "a", "b", 1, expires_at=datetime(2026, 1, 1)),
            InvalidInput,
            "expires_at must carry a time zone",
        ),
        (
            CommitLock("l", fulfilment="zz" * 32),
            InvalidInput,
            "fulfilment must be 64 hexadecimal characters (32 bytes)",
        ),
        (
            OpenWallet("w", WalletKind.PARTICIPANT, ""),
            InvalidInput,
            "owner must be 1 to 200 characters",
        ),
        (
            OpenWallet("w", WalletKind.PARTICIPANT, "x" * 201),
            InvalidInput,
            "owner must be 1 to 200 characters",
        ),
        (
            OpenWallet("w", WalletKind.ISSUANCE, "cb"),
            NotAllowed,
            "the issuance wallet is created with the ledger, not opened",
        ),
    ],
)
def test_an_invalid_command_is_refused_saying_what_is_wrong(
    command: MakeTransfer, error: type[GatewayError], detail: str
) -> None:
    with pytest.raises(error) as err:
        command.validate()
    assert type(err.value) is error
    assert err.value.detail == detail


def test_an_owner_of_exactly_200_characters_is_accepted() -> None:
    OpenWallet("w", WalletKind.PARTICIPANT, "x" * 200).validate()
    OpenWallet("w", WalletKind.PARTICIPANT, "x").validate()


def test_a_fingerprint_is_the_sha256_of_compact_sorted_json_with_the_operation_name() -> None:
    # Known answer, written out by hand: keys sorted, no spaces, the operation under "op".
    canonical = (
        '{"amount":150,"credit_wallet_id":"b","currency":"KZT","debit_wallet_id":"a",'
        '"op":"transfer","reference":null}'
    )
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert MakeTransfer("t-1", "a", "b", 150).fingerprint() == expected


def test_a_lock_fingerprint_does_not_depend_on_the_condition_case() -> None:
    upper = CreateLock("l", "a", "b", 1, condition=COND.upper())
    assert upper.fingerprint() == CreateLock("l", "a", "b", 1, condition=COND).fingerprint()
    assert upper.body()["condition"] == COND
