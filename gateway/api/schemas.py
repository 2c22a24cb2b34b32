"""Request and response bodies (msgspec). Types, and the one maximum length of each free-text
field (its column's size), so that too long a text is refused at the edge the same way on
SQLite and PostgreSQL; ranges and rules live in the domain, so that every caller, not just
HTTP, gets the same checks and the same error codes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from gateway.ledger.model import (
    Entry,
    HistoryPage,
    InvariantReport,
    Lock,
    LockState,
    Transfer,
    TransferKind,
    Wallet,
    WalletKind,
    WalletStatus,
)

Id = Annotated[str, Meta(min_length=1, max_length=128, description="Client-chosen id")]
Hex32 = Annotated[str, Meta(pattern="^[0-9a-fA-F]{64}$", description="32 bytes, hex")]
TIYN_EXAMPLE = 150_000
"""1,500.00 KZT: the amount the document's examples use."""
Tiyn = Annotated[
    int,
    Meta(
        description=(
            "Amount in tiyn, the integer minor unit (1 KZT = 100 tiyn): a positive integer, "
            "never a decimal (150000 is 1,500.00 KZT; 1000.50 is refused)"
        ),
        examples=[TIYN_EXAMPLE],
    ),
]
TiynAmount = Annotated[
    int,
    Meta(
        description="Amount in tiyn, the integer minor unit (1 KZT = 100 tiyn)",
        examples=[TIYN_EXAMPLE],
    ),
]
"""An amount an answer reports (a balance may be 0, a change negative)."""
TEXT_MAX = 200
"""The maximum length, in characters, of the ledger's free-text fields (``owner``,
``reference``): the size of their columns."""
Owner = Annotated[
    str, Meta(min_length=1, max_length=TEXT_MAX, description="Who holds the wallet (free text)")
]
Reference = Annotated[
    str, Meta(max_length=TEXT_MAX, description="The client's own reference (free text)")
]


class _In(Struct, forbid_unknown_fields=True):
    pass


class WalletCreate(_In):
    id: Id
    kind: WalletKind
    owner: Owner
    currency: str = "KZT"


class WalletStatusChange(_In):
    status: WalletStatus


class TransferCreate(_In):
    id: Id
    debit_wallet_id: Id
    credit_wallet_id: Id
    amount: Tiyn
    currency: str = "KZT"
    reference: Reference | None = None


class IssuanceCreate(_In):
    id: Id
    wallet_id: Id
    amount: Tiyn
    currency: str = "KZT"
    reference: Reference | None = None


class LockCreate(_In):
    id: Id
    debit_wallet_id: Id
    credit_wallet_id: Id
    amount: Tiyn
    currency: str = "KZT"
    expires_at: datetime | None = None
    condition: Hex32 | None = None
    reference: Reference | None = None


class LockCommit(_In):
    fulfilment: Hex32 | None = None


class LockRelease(_In):
    pass


# batch operations: a tagged union on "op"


class OpenWalletOp(WalletCreate, tag="open_wallet", tag_field="op"):
    pass


class TransferOp(TransferCreate, tag="transfer", tag_field="op"):
    pass


class IssueOp(IssuanceCreate, tag="issue", tag_field="op"):
    pass


class RedeemOp(IssuanceCreate, tag="redeem", tag_field="op"):
    pass


class LockOp(LockCreate, tag="lock", tag_field="op"):
    pass


class CommitOp(_In, tag="commit_lock", tag_field="op"):
    id: Id
    fulfilment: Hex32 | None = None


class ReleaseOp(_In, tag="release_lock", tag_field="op"):
    id: Id


class SetStatusOp(_In, tag="set_wallet_status", tag_field="op"):
    id: Id
    status: WalletStatus


BatchOperation = (
    OpenWalletOp | TransferOp | IssueOp | RedeemOp | LockOp | CommitOp | ReleaseOp | SetStatusOp
)


class BatchCreate(_In):
    operations: list[BatchOperation]


# responses


class WalletOut(Struct, frozen=True, tag_field="object", tag="wallet"):
    id: str
    kind: WalletKind
    owner: str
    currency: str
    status: WalletStatus
    posted: TiynAmount
    reserved: TiynAmount
    available: TiynAmount
    created_at: datetime

    @classmethod
    def of(cls, w: Wallet) -> WalletOut:
        return cls(
            id=w.id,
            kind=w.kind,
            owner=w.owner,
            currency=w.currency,
            status=w.status,
            posted=w.posted,
            reserved=w.reserved,
            available=w.available,
            created_at=w.created_at,
        )


class TransferOut(Struct, frozen=True, tag_field="object", tag="transfer"):
    id: str
    kind: TransferKind
    debit_wallet_id: str
    credit_wallet_id: str
    amount: TiynAmount
    currency: str
    reference: str | None
    created_at: datetime

    @classmethod
    def of(cls, t: Transfer) -> TransferOut:
        return cls(
            id=t.id,
            kind=t.kind,
            debit_wallet_id=t.debit_wallet_id,
            credit_wallet_id=t.credit_wallet_id,
            amount=t.amount,
            currency=t.currency,
            reference=t.reference,
            created_at=t.created_at,
        )


class LockOut(Struct, frozen=True, tag_field="object", tag="lock"):
    id: str
    debit_wallet_id: str
    credit_wallet_id: str
    amount: TiynAmount
    currency: str
    state: LockState
    condition: str | None
    fulfilment: str | None
    reference: str | None
    expires_at: datetime | None
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, lk: Lock) -> LockOut:
        return cls(
            id=lk.id,
            debit_wallet_id=lk.debit_wallet_id,
            credit_wallet_id=lk.credit_wallet_id,
            amount=lk.amount,
            currency=lk.currency,
            state=lk.state,
            condition=lk.condition,
            fulfilment=lk.fulfilment,
            reference=lk.reference,
            expires_at=lk.expires_at,
            created_at=lk.created_at,
            resolved_at=lk.resolved_at,
        )


ResultOut = WalletOut | TransferOut | LockOut


def result_out(r: Wallet | Transfer | Lock) -> ResultOut:
    if isinstance(r, Wallet):
        return WalletOut.of(r)
    if isinstance(r, Transfer):
        return TransferOut.of(r)
    return LockOut.of(r)


class BatchOut(Struct, frozen=True):
    results: list[ResultOut]


class EntryOut(Struct, frozen=True):
    seq: int
    op: str
    ref_id: str
    posted_delta: TiynAmount
    reserved_delta: TiynAmount
    posted_after: TiynAmount
    reserved_after: TiynAmount
    created_at: datetime

    @classmethod
    def of(cls, e: Entry) -> EntryOut:
        return cls(
            seq=e.seq,
            op=e.op,
            ref_id=e.ref_id,
            posted_delta=e.posted_delta,
            reserved_delta=e.reserved_delta,
            posted_after=e.posted_after,
            reserved_after=e.reserved_after,
            created_at=e.created_at,
        )


class HistoryOut(Struct, frozen=True):
    wallet_id: str
    entries: list[EntryOut]
    next_cursor: int | None

    @classmethod
    def of(cls, wallet_id: str, page: HistoryPage) -> HistoryOut:
        return cls(
            wallet_id=wallet_id,
            entries=[EntryOut.of(e) for e in page.entries],
            next_cursor=page.next_cursor,
        )


class InvariantsOut(Struct, frozen=True):
    ok: bool
    total_posted: TiynAmount
    issued_minus_redeemed: TiynAmount
    violations: list[str]

    @classmethod
    def of(cls, r: InvariantReport) -> InvariantsOut:
        return cls(
            ok=r.ok,
            total_posted=r.total_posted,
            issued_minus_redeemed=r.issued_minus_redeemed,
            violations=list(r.violations),
        )
