"""The chain's side of the collateral log: every ``Minted`` and ``Redeemed`` event, in chain
order, with the token supply after it, and reserve statements.

The redemption watcher calls this in its pass, so the log's chain entries share the watcher's
guarantees: an event is logged once it has N confirmations, exactly once (the pass's cursor moves
in the same transaction; a rescan after a rewind skips events already logged), and in chain order
(passes cover consecutive block ranges).

Within one pass the order in the pool is: the range's chain events (burns lower the supply
before their payouts lower the DT), the redemption payouts (pooled by the ledger's trigger), then
the reserve statement, whose reserve is the segregated wallet's balance after all of them. So the
supply never exceeds the reserve at any point of the log unless it really did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from gateway.collateral import entries as fmt
from gateway.collateral import service as collateral
from gateway.stablecoin.chain_values import MintedEvent, RedeemedEvent
from gateway.stablecoin.model import redemption_transfer_id
from gateway.stablecoin.runtime import Stablecoin
from gateway.stablecoin.store import StablecoinUnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChainRange:
    """What the chain says of one block range, read before the pass's transaction."""

    minted: tuple[MintedEvent, ...]
    supply_before: int
    """totalSupply at the block before the range."""
    supply_at_end: int
    """totalSupply at the range's last block."""


def read_range(sc: Stablecoin, from_block: int, to_block: int) -> ChainRange | None:
    """The chain's mints and supply over the range (None when no log is kept)."""
    if sc.collateral is None:
        return None
    minted = tuple(sc.chain.minted_events(from_block, to_block))
    # Before its deployment block (``start_block``) the contract has no code and no supply.
    before = sc.chain.total_supply(from_block - 1) if from_block > sc.settings.start_block else 0
    return ChainRange(minted, before, sc.chain.total_supply(to_block))


def pool_events(
    uow: StablecoinUnitOfWork,
    sc: Stablecoin,
    chain: ChainRange | None,
    redeemed: tuple[RedeemedEvent, ...] | list[RedeemedEvent],
    now: datetime,
) -> None:
    """Pool the range's chain events, in chain order, before the pass records its payouts."""
    if chain is None or sc.collateral is None:
        return
    ordered: list[tuple[int, int, MintedEvent | RedeemedEvent]] = [
        *((m.block_number, m.log_index, m) for m in chain.minted),
        *((r.block_number, r.log_index, r) for r in redeemed),
    ]
    ordered.sort(key=lambda t: (t[0], t[1]))
    supply = chain.supply_before
    items: list[collateral.ChainEntry] = []
    for _, _, ev in ordered:
        tx = ev.tx_hash.lower()
        if isinstance(ev, MintedEvent):
            supply += ev.amount
            mint = uow.stablecoin.mint_by_request_id(ev.request_id.hex())
            transfer_id = mint.transfer_id if mint is not None else None
            body = fmt.encode(
                fmt.ChainMint(
                    tx_hash=tx,
                    log_index=ev.log_index,
                    block=ev.block_number,
                    to=ev.to.lower(),
                    amount=ev.amount,
                    request_id="0x" + ev.request_id.hex(),
                    transfer_id=transfer_id,
                    supply=supply,
                )
            )
            items.append(collateral.ChainEntry("mint", body, transfer_id, tx, ev.log_index))
        else:
            supply -= ev.amount
            transfer_id = redemption_transfer_id(ev.tx_hash, ev.log_index)
            body = fmt.encode(
                fmt.ChainBurn(
                    tx_hash=tx,
                    log_index=ev.log_index,
                    block=ev.block_number,
                    from_=ev.redeemer.lower(),
                    amount=ev.amount,
                    dt_wallet_ref=ev.dt_wallet_ref,
                    transfer_id=transfer_id,
                    supply=supply,
                )
            )
            items.append(collateral.ChainEntry("burn", body, transfer_id, tx, ev.log_index))
    if supply != chain.supply_at_end:
        log.error(
            "the chain's supply %d at the range's end is not the %d its events add up to",
            chain.supply_at_end,
            supply,
        )
    collateral.pool_chain_entries(uow, sc.collateral, items, now)


def pool_statement(
    uow: StablecoinUnitOfWork,
    sc: Stablecoin,
    chain: ChainRange | None,
    redeemed: int,
    block: int,
    block_hash: str | None,
    now: datetime,
) -> bool:
    """Pool a reserve statement at ``block`` when one is due, after the pass's payouts.
    Returns whether one was pooled (the caller notes the time once the pass commits)."""
    clog = sc.collateral
    if chain is None or clog is None or block_hash is None:
        return False
    if not collateral.statement_due(clog, bool(chain.minted) or redeemed > 0):
        return False
    uow.ledger.wallets_for_update([clog.wallet_id])
    wallet = uow.ledger.wallet(clog.wallet_id)
    reserve = wallet.posted if wallet is not None else 0
    item = collateral.statement_entry(block, block_hash, chain.supply_at_end, reserve, now)
    collateral.pool_chain_entries(uow, clog, [item], now)
    return True


__all__ = ["ChainRange", "pool_events", "pool_statement", "read_range"]
