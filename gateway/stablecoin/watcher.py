"""The redemption watcher: pays the DT of every ``Redeemed`` log once it has N confirmations.

One pass (:func:`poll`):

1. load the cursor (the last block finished, with its hash); if the chain now has another
   block at that height, a reorganisation happened: rewind ``reorg_rewind_blocks`` and rescan
   (a redemption already paid is recognised by ``(tx_hash, log_index)`` and skipped);
2. read the ``Redeemed`` logs from the cursor to the newest block with N confirmations;
3. in ONE transaction: record each redemption, move its DT from the segregated wallet to the
   exchange wallet it names (ledger transfer ``redeem-<tx hash>-<log index>``), queue its
   webhook, and move the cursor. A crash before the commit leaves the cursor where it was, so
   the next pass (after a restart too) reads the same logs again; one after leaves nothing to
   redo;
4. after a pass that paid redemptions, attest the (lower) reserve, anchoring the log past the
   payouts.

A redemption younger than N confirmations is never paid, so a reorganisation shallower than N
cannot make the gateway pay for a burn that no longer exists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.db import retrying, utcnow
from gateway.errors import GatewayError
from gateway.faults import crash_point
from gateway.ledger import service as ledger
from gateway.ledger.model import WalletKind, WalletStatus
from gateway.stablecoin import collateral_feed
from gateway.stablecoin.chain_values import RedeemedEvent
from gateway.stablecoin.events import record_redemption_event
from gateway.stablecoin.model import (
    Cursor,
    Redemption,
    RedemptionState,
    redemption_payout,
    redemption_transfer_id,
)
from gateway.stablecoin.reserve import attest_after_payouts
from gateway.stablecoin.service import UowFactory
from gateway.stablecoin.store import StablecoinUnitOfWork

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollResult:
    cursor: Cursor
    redemptions: tuple[Redemption, ...] = ()
    rewound_from: int | None = None
    """Set when the pass found a reorganisation and rewound from this block."""


def _start(sc: Stablecoin) -> Cursor:
    return Cursor(sc.contract, sc.settings.start_block - 1, None)


def load_cursor(uow: UowFactory, sc: Stablecoin) -> Cursor | None:
    read = uow(readonly=True)
    with read:
        return read.stablecoin.cursor(sc.contract)


def poll(uow: UowFactory, sc: Stablecoin) -> PollResult:
    """One pass of the watcher (see the module docstring)."""
    cursor = load_cursor(uow, sc)
    stored = cursor is not None
    cursor = cursor or _start(sc)
    rewound_from = None
    if cursor.block_hash is not None and sc.chain.block_hash(cursor.block_number) != (
        cursor.block_hash
    ):
        rewound_from = cursor.block_number
        back = max(
            sc.settings.start_block - 1, cursor.block_number - sc.settings.reorg_rewind_blocks
        )
        rewound = Cursor(sc.contract, back, sc.chain.block_hash(back) if back >= 0 else None)
        log.warning(
            "block %d changed hash (reorganisation): watcher rewinds to %d", rewound_from, back
        )
        with_row = uow()
        with with_row:
            with_row.stablecoin.save_cursor(rewound, utcnow())
            with_row.commit()
        cursor, stored = rewound, True

    safe = sc.chain.block_number() - sc.settings.confirmations + 1
    if safe <= cursor.block_number:
        return PollResult(cursor, rewound_from=rewound_from)
    to = min(safe, cursor.block_number + sc.settings.max_block_range)
    events = sc.chain.redeemed_events(cursor.block_number + 1, to)
    chain_range = collateral_feed.read_range(uow, sc, cursor.block_number + 1, to)
    new_cursor = Cursor(sc.contract, to, sc.chain.block_hash(to))
    if events:
        crash_point("redeem.after_event", sc.faults)

    write = uow()
    start_block = cursor.block_number

    stated = False

    def work() -> tuple[Redemption, ...]:
        nonlocal stated
        now = utcnow()
        current = write.stablecoin.cursor(sc.contract)
        if (current.block_number if current else None) != (start_block if stored else None):
            return ()  # another pass moved the cursor meanwhile: it did this work
        supply = collateral_feed.pool_events(write, sc, chain_range, events, now)
        paid = tuple(r for ev in events if (r := _record(write, sc, ev, now)) is not None)
        stated = collateral_feed.pool_statement(
            write, sc, chain_range, supply, len(events), to, new_cursor.block_hash, now
        )
        write.stablecoin.save_cursor(new_cursor, now)
        return paid

    recorded = retrying(write, work)
    if stated and sc.collateral is not None:
        sc.collateral.last_statement = time.monotonic()
    if any(r.state is RedemptionState.PAID for r in recorded):
        attest_after_payouts(uow, sc)
    return PollResult(new_cursor, recorded, rewound_from)


def _record(
    uow: StablecoinUnitOfWork, sc: Stablecoin, ev: RedeemedEvent, now: datetime
) -> Redemption | None:
    if uow.stablecoin.redemption(ev.tx_hash, ev.log_index) is not None:
        return None  # paid (or held) by an earlier pass: a rescan after a rewind
    wallet = uow.ledger.wallet(ev.dt_wallet_ref)
    transfer_id = redemption_transfer_id(ev.tx_hash, ev.log_index)
    state, reason, exchange = RedemptionState.PAID, None, ""
    if wallet is None or wallet.kind is not WalletKind.EXCHANGE:
        state, reason = RedemptionState.HELD, f"{ev.dt_wallet_ref!r} is not an exchange wallet"
    elif wallet.status is WalletStatus.CLOSED:
        exchange = wallet.owner  # held, but its owner's to see (and to get the webhook of)
        state, reason = RedemptionState.HELD, f"wallet {wallet.id} is closed"
    else:
        exchange = wallet.owner
        try:
            ledger.execute(
                uow,
                [
                    redemption_payout(
                        tx_hash=ev.tx_hash,
                        log_index=ev.log_index,
                        amount=ev.amount,
                        currency=sc.currency,
                        segregated=sc.segregated_wallet_id,
                        wallet_id=wallet.id,
                    )
                ],
                now,
            )
        except GatewayError as exc:  # refused before any write: hold it for an operator
            state, reason = RedemptionState.HELD, f"{exc.code}: {exc.detail}"[:200]
    if state is RedemptionState.HELD:
        log.error("redemption %s:%d held: %s", ev.tx_hash, ev.log_index, reason)
    r = Redemption(
        tx_hash=ev.tx_hash,
        log_index=ev.log_index,
        contract_address=sc.contract,
        block_number=ev.block_number,
        block_hash=ev.block_hash,
        redeemer=ev.redeemer,
        amount=ev.amount,
        dt_wallet_ref=ev.dt_wallet_ref,
        exchange=exchange,
        state=state,
        created_at=now,
        transfer_id=transfer_id if state is RedemptionState.PAID else None,
        reason=reason,
    )
    uow.stablecoin.add_redemption(r)
    record_redemption_event(uow.outbox, r, now)
    return r


__all__ = ["PollResult", "load_cursor", "poll"]
