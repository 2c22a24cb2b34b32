"""The DT ledger's pure domain: wallets, transfers, locks, the commands that change them.

Vocabulary follows TigerBeetle: a *transfer* moves posted funds between two wallets at once; a
*lock* is a two-phase (pending) transfer that reserves funds in the debit wallet until it is
*posted* (committed to the beneficiary), *voided* (released back) or *expired*.

Invariants, enforced here and again by CHECK constraints in the store:

- amounts are positive integers of tiyn (1 KZT = 100 tiyn), never above ``MAX_AMOUNT``;
- a wallet's ``available = posted - reserved`` never goes below zero, except for the central
  bank's issuance wallet, whose balance is minus everything issued and not redeemed: the sum of
  all posted balances is therefore always zero (double entry), and the sum of all other wallets
  is issued - redeemed (conservation);
- both wallets of a movement share its currency; frozen wallets cannot send, closed wallets can
  neither send nor receive;
- a lock resolves at most once (``LOCK_TRANSITIONS``).

This module imports only the standard library, ``gateway.errors`` and the ledger's errors
(:mod:`gateway.ledger.errors`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

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

MAX_AMOUNT = 2**63 - 1
"""Largest amount one operation may carry (fits a signed 64-bit column)."""

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
ISSUANCE_WALLET_PREFIX = "issuance-"


def issuance_wallet_id(currency: str) -> str:
    """The central bank's issuance wallet for ``currency`` (created with the schema)."""
    return ISSUANCE_WALLET_PREFIX + currency


# --------------------------------------------------------------------------- state


class WalletKind(StrEnum):
    ISSUANCE = "issuance"
    PARTICIPANT = "participant"
    FOREIGN_CENTRAL_BANK = "foreign_central_bank"
    SEGREGATED_COLLATERAL = "segregated_collateral"
    EXCHANGE = "exchange"
    ESCROW = "escrow"


class WalletStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


WALLET_TRANSITIONS: dict[WalletStatus, frozenset[WalletStatus]] = {
    WalletStatus.OPEN: frozenset({WalletStatus.FROZEN, WalletStatus.CLOSED}),
    WalletStatus.FROZEN: frozenset({WalletStatus.OPEN, WalletStatus.CLOSED}),
    WalletStatus.CLOSED: frozenset(),
}


class LockState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


LOCK_TRANSITIONS: dict[LockState, frozenset[LockState]] = {
    LockState.PENDING: frozenset({LockState.POSTED, LockState.VOIDED, LockState.EXPIRED}),
    LockState.POSTED: frozenset(),
    LockState.VOIDED: frozenset(),
    LockState.EXPIRED: frozenset(),
}


class TransferKind(StrEnum):
    TRANSFER = "transfer"
    ISSUE = "issue"
    REDEEM = "redeem"


@dataclass(frozen=True, slots=True)
class Wallet:
    id: str
    kind: WalletKind
    owner: str
    currency: str
    status: WalletStatus
    posted: int
    reserved: int
    created_at: datetime
    fingerprint: str = ""

    @property
    def available(self) -> int:
        return self.posted - self.reserved

    @property
    def may_go_negative(self) -> bool:
        return self.kind is WalletKind.ISSUANCE

    def _check_can_send(self, amount: int, currency: str) -> None:
        self._check_currency(currency)
        if self.status is WalletStatus.CLOSED:
            raise WalletClosed(f"wallet {self.id} is closed", wallet_id=self.id)
        if self.status is WalletStatus.FROZEN:
            raise WalletFrozen(f"wallet {self.id} is frozen", wallet_id=self.id)
        if not self.may_go_negative and self.available < amount:
            raise InsufficientFunds(
                f"wallet {self.id} has {self.available} available, needs {amount}",
                wallet_id=self.id,
            )

    def _check_can_receive(self, currency: str) -> None:
        self._check_currency(currency)
        if self.status is WalletStatus.CLOSED:
            raise WalletClosed(f"wallet {self.id} is closed", wallet_id=self.id)

    def _check_currency(self, currency: str) -> None:
        if currency != self.currency:
            raise CurrencyMismatch(
                f"wallet {self.id} holds {self.currency}, not {currency}", wallet_id=self.id
            )

    def _with_balances(self, posted: int, reserved: int) -> Wallet:
        # The hot path's copy: a direct constructor call is several times cheaper than
        # dataclasses.replace, which introspects the fields on every call.
        return Wallet(
            self.id,
            self.kind,
            self.owner,
            self.currency,
            self.status,
            posted,
            reserved,
            self.created_at,
            self.fingerprint,
        )

    def debit(self, amount: int, currency: str) -> Wallet:
        self._check_can_send(amount, currency)
        return self._with_balances(self.posted - amount, self.reserved)

    def credit(self, amount: int, currency: str) -> Wallet:
        self._check_can_receive(currency)
        return self._with_balances(self.posted + amount, self.reserved)

    def reserve(self, amount: int, currency: str) -> Wallet:
        self._check_can_send(amount, currency)
        return self._with_balances(self.posted, self.reserved + amount)

    def settle_reserved(self, amount: int) -> Wallet:
        """Post a reserved amount out of the wallet (a lock's commit).

        Deliberately allowed on a frozen wallet: the lock was a promise made before the freeze,
        and refusing it would break the atomicity of the exchange it belongs to.
        """
        return self._with_balances(self.posted - amount, self.reserved - amount)

    def unreserve(self, amount: int) -> Wallet:
        return self._with_balances(self.posted, self.reserved - amount)

    def with_status(self, status: WalletStatus) -> Wallet:
        if status is self.status:
            return self
        if status not in WALLET_TRANSITIONS[self.status]:
            raise IllegalTransition(f"wallet {self.id} cannot go from {self.status} to {status}")
        if status is WalletStatus.CLOSED and (self.posted != 0 or self.reserved != 0):
            raise WalletNotEmpty(f"wallet {self.id} must be empty to close", wallet_id=self.id)
        return replace(self, status=status)


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    kind: TransferKind
    debit_wallet_id: str
    credit_wallet_id: str
    amount: int
    currency: str
    created_at: datetime
    reference: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Lock:
    id: str
    debit_wallet_id: str
    credit_wallet_id: str
    amount: int
    currency: str
    created_at: datetime
    expires_at: datetime | None
    condition: str | None
    """Hex SHA-256 that the fulfilment must hash to, or None."""
    state: LockState = LockState.PENDING
    resolved_at: datetime | None = None
    fulfilment: str | None = None
    reference: str | None = None
    fingerprint: str = ""

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def _move(self, to: LockState, now: datetime) -> Lock:
        if self.state is LockState.EXPIRED:
            raise LockExpired(f"lock {self.id} expired at {self.expires_at}", lock_id=self.id)
        if to not in LOCK_TRANSITIONS[self.state]:
            raise LockAlreadyResolved(
                f"lock {self.id} is already {self.state}", lock_id=self.id, state=str(self.state)
            )
        return self._resolved(to, now, self.fulfilment)

    def _resolved(self, state: LockState, now: datetime, fulfilment: str | None) -> Lock:
        return Lock(
            self.id,
            self.debit_wallet_id,
            self.credit_wallet_id,
            self.amount,
            self.currency,
            self.created_at,
            self.expires_at,
            self.condition,
            state,
            now,
            fulfilment,
            self.reference,
            self.fingerprint,
        )

    def post(self, fulfilment: str | None, now: datetime) -> Lock:
        if self.state is LockState.PENDING and self.is_expired(now):
            raise LockExpired(f"lock {self.id} expired at {self.expires_at}", lock_id=self.id)
        self._move(LockState.POSTED, now)  # refuses what cannot be posted
        if self.condition is not None and (
            fulfilment is None or not fulfilment_matches(self.condition, fulfilment)
        ):
            raise ConditionMismatch(
                f"fulfilment does not hash to the condition of lock {self.id}", lock_id=self.id
            )
        return self._resolved(
            LockState.POSTED, now, fulfilment if self.condition is not None else None
        )

    def void(self, now: datetime) -> Lock:
        if self.state is LockState.PENDING and self.is_expired(now):
            raise LockExpired(f"lock {self.id} expired at {self.expires_at}", lock_id=self.id)
        return self._move(LockState.VOIDED, now)

    def expire(self, now: datetime) -> Lock:
        if not self.is_expired(now):
            raise IllegalTransition(f"lock {self.id} has not reached its expiry")
        return self._move(LockState.EXPIRED, now)


def fulfilment_matches(condition_hex: str, fulfilment_hex: str) -> bool:
    try:
        preimage = bytes.fromhex(fulfilment_hex)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.sha256(preimage).hexdigest(), condition_hex.lower())


# --------------------------------------------------------------------------- commands

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidId(f"{what} must match {ID_PATTERN.pattern}")


def _check_amount(amount: int) -> None:
    # bool is an int subclass; JSON true must not become 1 tiyn.
    if type(amount) is not int:
        raise InvalidAmount("amount must be an integer number of tiyn")
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidAmount(f"amount must be between 1 and {MAX_AMOUNT} tiyn")


def _check_currency_code(currency: str) -> None:
    if not isinstance(currency, str) or not CURRENCY_PATTERN.match(currency):
        raise InvalidInput("currency must be an ISO 4217 code such as KZT")


def _check_hex64(value: str | None, what: str) -> None:
    if value is not None and not _HEX64.match(value):
        raise InvalidInput(f"{what} must be 64 hexadecimal characters (32 bytes)")


_BODY_FIELDS: dict[type, tuple[str, ...]] = {}
"""The fields of each command class's body (all but ``id``), in declaration order."""


@dataclass(frozen=True, slots=True)
class Command:
    """Base of ledger commands. ``id`` is the client-chosen idempotency key."""

    id: str
    name: ClassVar[str] = "command"

    def body(self) -> Mapping[str, Any]:
        names = _BODY_FIELDS.get(type(self))
        if names is None:  # once per command class: dataclasses.fields is slow
            names = tuple(f.name for f in fields(self) if f.name != "id")
            _BODY_FIELDS[type(self)] = names
        return {name: getattr(self, name) for name in names}

    def fingerprint(self) -> str:
        """Stable hash of everything but the id: equal bodies replay, different ones conflict."""
        canonical = json.dumps(
            {"op": self.name, **self.body()}, sort_keys=True, default=str, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def validate(self) -> None:
        _check_id(self.id, "id")


@dataclass(frozen=True, slots=True)
class OpenWallet(Command):
    kind: WalletKind
    owner: str
    currency: str = "KZT"
    name: ClassVar[str] = "open_wallet"

    def validate(self) -> None:
        Command.validate(self)
        _check_currency_code(self.currency)
        if not isinstance(self.owner, str) or not 1 <= len(self.owner) <= 200:
            raise InvalidInput("owner must be 1 to 200 characters")
        if self.kind is WalletKind.ISSUANCE:
            raise NotAllowed("the issuance wallet is created with the ledger, not opened")


@dataclass(frozen=True, slots=True)
class SetWalletStatus(Command):
    """``id`` is the wallet id: status changes are idempotent by nature."""

    status: WalletStatus
    name: ClassVar[str] = "set_wallet_status"


@dataclass(frozen=True, slots=True)
class MakeTransfer(Command):
    debit_wallet_id: str
    credit_wallet_id: str
    amount: int
    currency: str = "KZT"
    reference: str | None = None
    name: ClassVar[str] = "transfer"

    def validate(self) -> None:
        Command.validate(self)
        _check_id(self.debit_wallet_id, "debit_wallet_id")
        _check_id(self.credit_wallet_id, "credit_wallet_id")
        _check_amount(self.amount)
        _check_currency_code(self.currency)
        if self.debit_wallet_id == self.credit_wallet_id:
            raise SameWallet("debit and credit wallet must differ")


@dataclass(frozen=True, slots=True)
class CentralBankMovement(Command):
    """DT entering or leaving circulation through the central bank's issuance wallet."""

    wallet_id: str
    amount: int
    currency: str = "KZT"
    reference: str | None = None

    def validate(self) -> None:
        Command.validate(self)
        _check_id(self.wallet_id, "wallet_id")
        _check_amount(self.amount)
        _check_currency_code(self.currency)


@dataclass(frozen=True, slots=True)
class Issue(CentralBankMovement):
    """Central bank issuance: new DT from the issuance wallet into ``wallet_id``."""

    name: ClassVar[str] = "issue"


@dataclass(frozen=True, slots=True)
class Redeem(CentralBankMovement):
    """Central bank redemption: DT leaves circulation from ``wallet_id``."""

    name: ClassVar[str] = "redeem"


@dataclass(frozen=True, slots=True)
class CreateLock(Command):
    debit_wallet_id: str
    credit_wallet_id: str
    amount: int
    currency: str = "KZT"
    expires_at: datetime | None = None
    condition: str | None = None
    reference: str | None = None
    name: ClassVar[str] = "lock"

    def validate(self) -> None:
        Command.validate(self)
        _check_id(self.debit_wallet_id, "debit_wallet_id")
        _check_id(self.credit_wallet_id, "credit_wallet_id")
        _check_amount(self.amount)
        _check_currency_code(self.currency)
        _check_hex64(self.condition, "condition")
        if self.debit_wallet_id == self.credit_wallet_id:
            raise SameWallet("debit and credit wallet must differ")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise InvalidInput("expires_at must carry a time zone")

    def body(self) -> Mapping[str, Any]:
        body = dict(Command.body(self))
        if self.condition is not None:
            body["condition"] = self.condition.lower()
        return body


@dataclass(frozen=True, slots=True)
class CommitLock(Command):
    """``id`` is the lock id: a lock resolves once, so it is its own idempotency key."""

    fulfilment: str | None = None
    name: ClassVar[str] = "commit_lock"

    def validate(self) -> None:
        Command.validate(self)
        _check_hex64(self.fulfilment, "fulfilment")


@dataclass(frozen=True, slots=True)
class ReleaseLock(Command):
    """``id`` is the lock id."""

    name: ClassVar[str] = "release_lock"


Operation = (
    OpenWallet
    | SetWalletStatus
    | MakeTransfer
    | Issue
    | Redeem
    | CreateLock
    | CommitLock
    | ReleaseLock
)
Result = Wallet | Transfer | Lock


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a wallet's history: what one operation did to its balances."""

    seq: int
    wallet_id: str
    op: str
    ref_id: str
    posted_delta: int
    reserved_delta: int
    posted_after: int
    reserved_after: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: tuple[Entry, ...]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class InvariantReport:
    """What :func:`gateway.ledger.service.check_invariants` found; ``ok`` iff no violations."""

    total_posted: int
    issued_minus_redeemed: int
    violations: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations


__all__ = [
    "LOCK_TRANSITIONS",
    "MAX_AMOUNT",
    "WALLET_TRANSITIONS",
    "CentralBankMovement",
    "Command",
    "CommitLock",
    "CreateLock",
    "Entry",
    "HistoryPage",
    "InvariantReport",
    "Issue",
    "Lock",
    "LockState",
    "MakeTransfer",
    "OpenWallet",
    "Operation",
    "Redeem",
    "ReleaseLock",
    "Result",
    "SetWalletStatus",
    "Transfer",
    "TransferKind",
    "Wallet",
    "WalletKind",
    "WalletStatus",
    "fulfilment_matches",
    "issuance_wallet_id",
]
