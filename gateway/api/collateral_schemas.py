"""Response schemas of the collateral log's JSON views (``/v1/collateral/statements`` and
``/movements``). Amounts are integers of tiyn, as in the log's entries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from gateway.collateral import views


class StatementOut(Struct, frozen=True):
    index: Annotated[int, Meta(description="The statement's index in the log")]
    block: int
    block_hash: str
    reserve: Annotated[int, Meta(description="The segregated wallet's DT balance, in tiyn")]
    supply: Annotated[int, Meta(description="The contract's totalSupply at `block`, in tiyn")]
    time: str

    @classmethod
    def of(cls, s: views.StatementPoint) -> StatementOut:
        return cls(s.index, s.block, s.block_hash, s.reserve, s.supply, s.time)


class StatementsOut(Struct, frozen=True):
    tree_size: Annotated[int, Meta(description="The newest checkpoint's size: all are below it")]
    statements: Annotated[list[StatementOut], Meta(description="Newest first")]
    next_before: Annotated[
        int | None, Meta(description="Pass as `before` for older ones; null at the first")
    ]

    @classmethod
    def of(cls, page: views.Page) -> StatementsOut:
        return cls(page.tree_size, [StatementOut.of(s) for s in page.items], page.next_before)


class MovementOut(Struct, frozen=True):
    index: Annotated[int, Meta(description="The entry's index in the log")]
    type: Literal["dt", "mint", "burn"]
    amount: Annotated[
        int,
        Meta(description="Signed tiyn: the DT balance's change (dt), + minted, - redeemed (burn)"),
    ]
    after: Annotated[int, Meta(description="The DT balance (dt) or the supply (mint, burn) after")]
    time: Annotated[str | None, Meta(description="When the DT moved (dt only)")]
    block: Annotated[int | None, Meta(description="The event's block (mint and burn only)")]
    transfer_id: Annotated[str | None, Meta(description="The DT transfer")]
    tx_hash: Annotated[
        str | None,
        Meta(
            description="The chain transaction: the event's own, or for a DT movement that of "
            "the mint or redemption naming its transfer (null for a refund)"
        ),
    ]
    log_index: int | None
    entry: Annotated[dict[str, Any], Meta(description="The log entry itself, decoded")]

    @classmethod
    def of(cls, m: views.Movement) -> MovementOut:
        return cls(
            m.index,
            m.type,  # type: ignore[arg-type]
            m.amount,
            m.after,
            m.time,
            m.block,
            m.transfer_id,
            m.tx_hash,
            m.log_index,
            m.entry,
        )


class MovementsOut(Struct, frozen=True):
    tree_size: int
    movements: Annotated[list[MovementOut], Meta(description="Newest first")]
    next_before: int | None

    @classmethod
    def of(cls, page: views.Page) -> MovementsOut:
        return cls(page.tree_size, [MovementOut.of(m) for m in page.items], page.next_before)


__all__ = ["MovementOut", "MovementsOut", "StatementOut", "StatementsOut"]
