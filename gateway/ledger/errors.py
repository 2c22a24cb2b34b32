"""The ledger's typed errors: what a refused command raises, each with its stable ``code`` (the
ISO 20022 reason code where one exists: ``AM04`` insufficient funds, ``AC01`` unknown wallet, ...).

This module imports only ``gateway.errors``, the root of every error the gateway maps to a
problem response.
"""

from __future__ import annotations

from gateway.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound, Unprocessable


class InvalidAmount(InvalidInput):
    code = "AM12"
    title = "Invalid amount"


class InvalidId(InvalidInput):
    code = "INVALID_ID"
    title = "Invalid id"


class WalletNotFound(NotFound):
    code = "AC01"
    title = "Unknown wallet"


class LockNotFound(NotFound):
    code = "LOCK_NOT_FOUND"
    title = "Unknown lock"


class TransferNotFound(NotFound):
    code = "TRANSFER_NOT_FOUND"
    title = "Unknown transfer"


class WalletExists(IdempotencyConflict):
    title = "Wallet id already used with different attributes"


class InsufficientFunds(Unprocessable):
    code = "AM04"
    title = "Insufficient funds"


class CurrencyMismatch(Unprocessable):
    code = "AM11"
    title = "Currency does not match the wallet"


class WalletFrozen(Unprocessable):
    code = "AC06"
    title = "Wallet is frozen"


class WalletClosed(Unprocessable):
    code = "AC04"
    title = "Wallet is closed"


class SameWallet(InvalidInput):
    code = "SAME_WALLET"
    title = "Debit and credit wallet are the same"


class NotAllowed(Unprocessable):
    code = "NOT_ALLOWED"
    title = "Operation not allowed on this wallet"


class IllegalTransition(Conflict):
    code = "ILLEGAL_TRANSITION"
    title = "State does not allow this change"


class LockAlreadyResolved(Conflict):
    code = "LOCK_RESOLVED"
    title = "Lock already resolved"


class LockExpired(Conflict):
    code = "LOCK_EXPIRED"
    title = "Lock expired"


class ConditionMismatch(Unprocessable):
    """The fulfilment's SHA-256 is not the lock's condition (Interledger's F05)."""

    code = "CONDITION_MISMATCH"
    title = "Fulfilment does not match the lock's condition"


class WalletNotEmpty(Conflict):
    code = "WALLET_NOT_EMPTY"
    title = "Wallet still holds or awaits funds"


__all__ = [
    "ConditionMismatch",
    "CurrencyMismatch",
    "IllegalTransition",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidId",
    "LockAlreadyResolved",
    "LockExpired",
    "LockNotFound",
    "NotAllowed",
    "SameWallet",
    "TransferNotFound",
    "WalletClosed",
    "WalletExists",
    "WalletFrozen",
    "WalletNotEmpty",
    "WalletNotFound",
]
