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
from typing import TYPE_CHECKING

from gateway.collateral import entries as fmt
from gateway.collateral import service as collateral
from gateway.stablecoin.chain_errors import ChainUnavailable
from gateway.stablecoin.chain_values import MintedEvent, RedeemedEvent
from gateway.stablecoin.model import redemption_transfer_id
from gateway.stablecoin.service import UowFactory
from gateway.stablecoin.store import StablecoinUnitOfWork

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

log = logging.getLogger(__name__)


_CHAIN_KINDS = ("mint", "burn", "statement")


@dataclass(frozen=True, slots=True)
class ChainRange:
    """What the chain says of one block range, read before the pass's transaction."""

    minted: tuple[MintedEvent, ...]
    supply_before: int
    """The supply after the chain entries logged so far (the newest one's ``supply``)."""
    logged_to: int
    """The block of the newest chain entry logged: an event up to it may be logged already (a
    rescan after a rewind), one after it is not."""
    supply_at_end: int | None
    """totalSupply at the range's last block; None when the node no longer keeps that state."""


def read_range(
    uow: UowFactory, sc: Stablecoin, from_block: int, to_block: int
) -> ChainRange | None:
    """The chain's mints and supply over the range (None when no log is kept).

    The supply before the range is the log's own, so no state older than the range's end is
    read: a node that keeps only recent state (pruned, or restored without its history) serves
    the watcher. totalSupply at the range's end is read as a cross-check, when the node has it.
    """
    if sc.collateral is None:
        return None
    minted = tuple(sc.chain.minted_events(from_block, to_block))
    logged = _newest_chain_entry(uow, sc.collateral.wallet_id)
    if logged is not None:
        supply, logged_to = logged.supply, logged.block
    elif from_block <= sc.settings.start_block:
        supply, logged_to = 0, from_block - 1  # no code, no supply before its deployment block
    else:
        # Blocks passed before the log was kept: only the chain's state at the block before
        # the range gives the supply to start from.
        supply, logged_to = sc.chain.total_supply(from_block - 1), from_block - 1
    return ChainRange(minted, supply, logged_to, _supply_at(sc, to_block))


def _newest_chain_entry(
    uow: UowFactory, wallet_id: str
) -> fmt.ChainMint | fmt.ChainBurn | fmt.Statement | None:
    """The newest mint, burn or statement, in the pool or else in the log (the pool first: an
    integrator moving it to the log meanwhile is then found there)."""
    entry: fmt.Entry | None = None
    read = uow(readonly=True)
    with read:
        body = read.collateral.last_pending_of_kind(wallet_id, _CHAIN_KINDS)
        if body is not None:
            entry = fmt.decode(body.encode("ascii"))
        else:
            stored = read.collateral.last_entry_of_kind(wallet_id, _CHAIN_KINDS)
            entry = fmt.decode(stored.body) if stored is not None else None
    assert entry is None or isinstance(entry, fmt.ChainMint | fmt.ChainBurn | fmt.Statement)
    return entry


def _supply_at(sc: Stablecoin, block: int) -> int | None:
    try:
        return sc.chain.total_supply(block)
    except ChainUnavailable as exc:
        log.info("no totalSupply at block %d to check the log's supply against: %s", block, exc)
        return None


def pool_events(
    uow: StablecoinUnitOfWork,
    sc: Stablecoin,
    chain: ChainRange | None,
    redeemed: tuple[RedeemedEvent, ...] | list[RedeemedEvent],
    now: datetime,
) -> int | None:
    """Pool the range's chain events, in chain order, before the pass records its payouts.
    Returns the supply after them (None when no log is kept)."""
    if chain is None or sc.collateral is None:
        return None
    ordered: list[tuple[int, int, MintedEvent | RedeemedEvent]] = [
        *((m.block_number, m.log_index, m) for m in chain.minted),
        *((r.block_number, r.log_index, r) for r in redeemed),
    ]
    ordered.sort(key=lambda t: (t[0], t[1]))
    supply = chain.supply_before
    items: list[collateral.ChainEntry] = []
    for block, _, ev in ordered:
        tx = ev.tx_hash.lower()
        kind = "mint" if isinstance(ev, MintedEvent) else "burn"
        if block <= chain.logged_to and uow.collateral.has_chain_entry(
            sc.collateral.wallet_id, kind, tx, ev.log_index
        ):
            continue  # logged by an earlier pass, and counted in the supply before the range
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
    if chain.supply_at_end is not None and supply != chain.supply_at_end:
        log.error(
            "the chain's supply %d at the range's end is not the %d its events add up to",
            chain.supply_at_end,
            supply,
        )
    collateral.pool_chain_entries(uow, sc.collateral, items, now)
    return supply


def pool_statement(
    uow: StablecoinUnitOfWork,
    sc: Stablecoin,
    chain: ChainRange | None,
    supply: int | None,
    redeemed: int,
    block: int,
    block_hash: str | None,
    now: datetime,
) -> bool:
    """Pool a reserve statement at ``block`` when one is due, after the pass's payouts;
    ``supply`` is the one :func:`pool_events` returned, stated when the node has no
    totalSupply at ``block``. Returns whether one was pooled (the caller notes the time once
    the pass commits)."""
    clog = sc.collateral
    if chain is None or clog is None or supply is None or block_hash is None:
        return False
    if not collateral.statement_due(clog, bool(chain.minted) or redeemed > 0):
        return False
    uow.ledger.wallets_for_update([clog.wallet_id])
    wallet = uow.ledger.wallet(clog.wallet_id)
    reserve = wallet.posted if wallet is not None else 0
    stated = chain.supply_at_end if chain.supply_at_end is not None else supply
    item = collateral.statement_entry(block, block_hash, stated, reserve, now)
    collateral.pool_chain_entries(uow, clog, [item], now)
    return True


__all__ = ["ChainRange", "pool_events", "pool_statement", "read_range"]
