"""The stablecoin's pure domain: mints, redemptions, the watcher's cursor, reconciliations.

A **mint** turns an exchange's DT into tokens::

    accepted ──> submitted ──> minted
        │            │
        └──> failed <┘──> refunded

- *accepted*: the DT moved from the exchange's wallet into the segregated collateral wallet, in
  the same transaction as the mint row and its webhook (nothing on-chain yet);
- *submitted*: a ``mint`` transaction was sent (its hash recorded);
- *minted*: the transaction is confirmed (or the chain says the request id was already used:
  an earlier submission, e.g. before a crash, got through);
- *failed*: the contract refused definitively; *refunded*: the DT went back (once: the refund
  transfer's id is ``refund-<mint id>``).

The on-chain request id is ``sha256("dt-gateway:mint:" + mint id)``: every retry of one mint
carries the same id, and the contract mints each id at most once.

A **redemption** is one ``Redeemed`` log, identified by ``(tx_hash, log_index)``: *paid* when its
DT moved from the segregated wallet to the referenced exchange wallet, *held* when the reference
names no exchange wallet (the DT stays in the segregated wallet until an operator acts).

A **reconciliation** compares, at one block, the segregated DT with the token supply::

    gap = segregated balance - mints not yet on-chain - redemptions burned but not paid
          - totalSupply

Any gap other than zero halts new mints until a later reconciliation finds none.

This module imports only the standard library and other domain modules.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from gateway.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    Unavailable,
    Unprocessable,
)
from gateway.ledger.errors import InvalidAmount
from gateway.ledger.model import MAX_AMOUNT, MakeTransfer

# --------------------------------------------------------------------------- errors


class InvalidEvmAddress(InvalidInput):
    code = "INVALID_ADDRESS"
    title = "Not an EVM address, or its EIP-55 checksum does not match"


class IdempotencyKeyMissing(InvalidInput):
    code = "IDEMPOTENCY_KEY_REQUIRED"
    title = "An Idempotency-Key header (1 to 128 printable characters) is required"


class IdempotencyKeyReused(IdempotencyConflict):
    title = "Idempotency-Key already used with a different body"


class ForeignWallet(Forbidden):
    code = "FOREIGN_WALLET"
    title = "The DT wallet does not belong to this exchange"


class NotAnExchangeWallet(Unprocessable):
    code = "NOT_EXCHANGE_WALLET"
    title = "The DT wallet is not an exchange wallet"


class MintNotFound(NotFound):
    code = "MINT_NOT_FOUND"
    title = "Unknown mint"


class MintCursorUnknown(InvalidInput):
    code = "INVALID_CURSOR"
    title = "The cursor is not one of this exchange's mints"


class AddressBlocklisted(Unprocessable):
    code = "ACCOUNT_BLOCKED"
    title = "The EVM address is blocklisted on the contract"


class ReceiverIsZeroAddress(Unprocessable):
    code = "RECEIVER_ZERO_ADDRESS"
    title = "Tokens cannot be minted to the zero address"


class ReceiverIsContract(Unprocessable):
    code = "RECEIVER_IS_CONTRACT"
    title = "Tokens cannot be minted to the stablecoin contract's own address"


class MintLimitExceeded(Unprocessable):
    code = "MINT_LIMIT_EXCEEDED"
    title = "The amount is above the gateway's per-mint limit"


class MintingPaused(Conflict):
    code = "CONTRACT_PAUSED"
    title = "The contract is paused: no mints until it is unpaused"


class MintsHalted(Unavailable):
    code = "MINTS_HALTED"
    title = "Reconciliation found a gap between the DT collateral and the token supply"


class CollateralShortfall(Unprocessable):
    code = "COLLATERAL_SHORTFALL"
    title = "The segregated DT cannot back the token supply after this mint"


class StablecoinNotConfigured(Unavailable):
    code = "STABLECOIN_NOT_CONFIGURED"
    title = "The stablecoin is not configured (no contract address)"


class IllegalMintTransition(Conflict):
    code = "ILLEGAL_TRANSITION"
    title = "The mint's state does not allow this change"


# --------------------------------------------------------------------------- state


class MintState(StrEnum):
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    MINTED = "minted"
    FAILED = "failed"
    REFUNDED = "refunded"


MINT_TRANSITIONS: dict[MintState, frozenset[MintState]] = {
    MintState.ACCEPTED: frozenset({MintState.SUBMITTED, MintState.MINTED, MintState.FAILED}),
    MintState.SUBMITTED: frozenset({MintState.SUBMITTED, MintState.MINTED, MintState.FAILED}),
    MintState.MINTED: frozenset(),
    MintState.FAILED: frozenset({MintState.REFUNDED}),
    MintState.REFUNDED: frozenset(),
}

UNSETTLED = (MintState.ACCEPTED, MintState.SUBMITTED)
"""States in which the chain may still mint: the gateway keeps driving them."""


class RedemptionState(StrEnum):
    PAID = "paid"
    HELD = "held"


REDEMPTION_TRANSITIONS: dict[RedemptionState, frozenset[RedemptionState]] = {
    RedemptionState.HELD: frozenset({RedemptionState.PAID}),
    RedemptionState.PAID: frozenset(),
}
"""A held redemption (its reference named no open exchange wallet) is paid once an operator
names the wallet; a paid one never changes."""


class RedemptionNotFound(NotFound):
    code = "REDEMPTION_NOT_FOUND"
    title = "Unknown redemption"


class RedemptionNotHeld(Conflict):
    code = "REDEMPTION_NOT_HELD"
    title = "Only a held redemption can be paid by an operator"


_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


def check_address_format(address: str) -> None:
    """Shape only (0x + 40 hex); the EIP-55 checksum is checked at the adapter (keccak)."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise InvalidEvmAddress(f"{address!r} is not a 0x-prefixed 20-byte hex address")


def check_idempotency_key(key: str | None) -> str:
    if key is None or not _KEY.match(key):
        raise IdempotencyKeyMissing("send an Idempotency-Key header of 1 to 128 visible ASCII")
    return key


def check_amount(amount: int) -> None:
    if type(amount) is not int:
        raise InvalidAmount("amount must be an integer number of tiyn")
    if amount <= 0 or amount > MAX_AMOUNT:
        raise InvalidAmount(f"amount must be between 1 and {MAX_AMOUNT} tiyn")


def request_id_of(mint_id: str) -> bytes:
    """The on-chain request id of a mint: the same for every submission of that mint."""
    return hashlib.sha256(f"dt-gateway:mint:{mint_id}".encode()).digest()


def event_id_of(*parts: str | int) -> str:
    """A deterministic webhook event id: one per (object, status), so receivers can dedupe."""
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:40]


def fingerprint_of(amount: int, source_wallet_id: str, evm_address: str) -> str:
    canonical = json.dumps(
        {"amount": amount, "source_wallet_id": source_wallet_id, "evm": evm_address.lower()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MintRequest:
    """What an exchange asks for; ``idempotency_key`` scopes to its ``exchange``."""

    exchange: str
    idempotency_key: str
    amount: int
    source_wallet_id: str
    evm_address: str

    def validate(self) -> None:
        check_idempotency_key(self.idempotency_key)
        check_amount(self.amount)
        check_address_format(self.evm_address)
        if not isinstance(self.source_wallet_id, str) or not 1 <= len(self.source_wallet_id) <= 128:
            raise InvalidInput("source_wallet_id must be 1 to 128 characters")

    def fingerprint(self) -> str:
        return fingerprint_of(self.amount, self.source_wallet_id, self.evm_address)


@dataclass(frozen=True, slots=True)
class Mint:
    id: str
    exchange: str
    idempotency_key: str
    fingerprint: str
    source_wallet_id: str
    segregated_wallet_id: str
    contract_address: str
    evm_address: str
    amount: int
    request_id: str
    """Hex of :func:`request_id_of` (64 characters, no 0x)."""
    state: MintState
    created_at: datetime
    updated_at: datetime
    tx_hash: str | None = None
    block_number: int | None = None
    error_code: str | None = None
    error_detail: str | None = None

    @property
    def transfer_id(self) -> str:
        return f"mint-{self.id}"

    @property
    def refund_transfer_id(self) -> str:
        return f"refund-{self.id}"

    @property
    def settled(self) -> bool:
        return self.state not in UNSETTLED

    def _move(self, to: MintState, now: datetime, **changes: object) -> Mint:
        if to not in MINT_TRANSITIONS[self.state]:
            raise IllegalMintTransition(f"mint {self.id} cannot go from {self.state} to {to}")
        return replace(self, state=to, updated_at=now, **changes)  # type: ignore[arg-type]

    def submit(self, tx_hash: str, now: datetime) -> Mint:
        return self._move(MintState.SUBMITTED, now, tx_hash=tx_hash)

    def confirm(self, tx_hash: str, block_number: int, now: datetime) -> Mint:
        return self._move(MintState.MINTED, now, tx_hash=tx_hash, block_number=block_number)

    def fail(self, code: str, detail: str, now: datetime) -> Mint:
        return self._move(MintState.FAILED, now, error_code=code, error_detail=detail[:500])

    def refund(self, now: datetime) -> Mint:
        return self._move(MintState.REFUNDED, now)


@dataclass(frozen=True, slots=True)
class Redemption:
    tx_hash: str
    log_index: int
    contract_address: str
    block_number: int
    block_hash: str
    redeemer: str
    amount: int
    dt_wallet_ref: str
    exchange: str
    state: RedemptionState
    created_at: datetime
    transfer_id: str | None = None
    reason: str | None = None
    seq: int | None = None
    resolved_by: str | None = None
    """The operator key that paid a held redemption."""
    resolved_at: datetime | None = None

    def pay_to(
        self, wallet_id: str, exchange: str, transfer_id: str, by: str, reason: str, at: datetime
    ) -> Redemption:
        """An operator's decision on a held redemption: pay it into ``wallet_id``."""
        if RedemptionState.PAID not in REDEMPTION_TRANSITIONS[self.state]:
            raise RedemptionNotHeld(f"redemption {self.tx_hash}:{self.log_index} is {self.state}")
        return replace(
            self,
            state=RedemptionState.PAID,
            exchange=exchange,
            transfer_id=transfer_id,
            reason=f"paid by an operator into {wallet_id}: {reason}"[:200],
            resolved_by=by,
            resolved_at=at,
        )


def redemption_transfer_id(tx_hash: str, log_index: int) -> str:
    """The ledger transfer of one redemption: its id makes the payment happen at most once."""
    return f"redeem-{tx_hash.removeprefix('0x').lower()}-{log_index}"


def redemption_payout(
    *, tx_hash: str, log_index: int, amount: int, currency: str, segregated: str, wallet_id: str
) -> MakeTransfer:
    """The DT payment of one redemption, from the segregated wallet into ``wallet_id``: by the
    watcher on the event, or by an operator for a held one; same id, so at most once."""
    return MakeTransfer(
        id=redemption_transfer_id(tx_hash, log_index),
        debit_wallet_id=segregated,
        credit_wallet_id=wallet_id,
        amount=amount,
        currency=currency,
        reference=f"stablecoin redemption {tx_hash}:{log_index}",
    )


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last block the watcher finished (all its redemptions recorded), and its hash."""

    contract_address: str
    block_number: int
    block_hash: str | None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    contract_address: str
    checked_at: datetime
    block_number: int
    segregated_balance: int
    pending_mints: int
    unpaid_redemptions: int
    total_supply: int
    gap: int
    seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.gap == 0

    @staticmethod
    def compute(
        *,
        contract_address: str,
        checked_at: datetime,
        block_number: int,
        segregated_balance: int,
        pending_mints: int,
        unpaid_redemptions: int,
        total_supply: int,
    ) -> Reconciliation:
        gap = segregated_balance - pending_mints - unpaid_redemptions - total_supply
        return Reconciliation(
            contract_address=contract_address,
            checked_at=checked_at,
            block_number=block_number,
            segregated_balance=segregated_balance,
            pending_mints=pending_mints,
            unpaid_redemptions=unpaid_redemptions,
            total_supply=total_supply,
            gap=gap,
        )

    def with_seq(self, seq: int) -> Reconciliation:
        return replace(self, seq=seq)


__all__ = [
    "MINT_TRANSITIONS",
    "REDEMPTION_TRANSITIONS",
    "UNSETTLED",
    "AddressBlocklisted",
    "CollateralShortfall",
    "Cursor",
    "ForeignWallet",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "IllegalMintTransition",
    "InvalidEvmAddress",
    "Mint",
    "MintCursorUnknown",
    "MintLimitExceeded",
    "MintNotFound",
    "MintRequest",
    "MintState",
    "MintingPaused",
    "MintsHalted",
    "NotAnExchangeWallet",
    "ReceiverIsContract",
    "ReceiverIsZeroAddress",
    "Reconciliation",
    "Redemption",
    "RedemptionNotFound",
    "RedemptionNotHeld",
    "RedemptionState",
    "StablecoinNotConfigured",
    "check_address_format",
    "check_amount",
    "check_idempotency_key",
    "event_id_of",
    "fingerprint_of",
    "redemption_payout",
    "redemption_transfer_id",
    "request_id_of",
]
