"""A batch's wallet changes as deltas with their conditions, for a store that writes them
without having row-locked the wallets when it read them (PostgreSQL: a wallet every PvP of a
participant touches is then held only from its write to the COMMIT, not from the batch's read).

The service checks a batch on the wallets as read; a store that writes :class:`WalletMove`\\ s
applies each as ``posted + posted_delta, reserved + reserved_delta`` on the row as it is when
written, and only if that row passes the same checks (:attr:`WalletMove.need`,
:attr:`~WalletMove.min_available`, :attr:`~WalletMove.posted_range`); otherwise the transaction
fails as a serialization failure and runs again, reading the row anew, so that a refusal is the
one the service raises on the row as it now is. The checks are exactly those the batch's
operations make, in order, so the outcome is the one a batch reading the row locked would have:

- a wallet that sends (a debit, a lock's reserve) must be open, one that receives (a credit,
  the beneficiary of a lock) must not be closed; a lock's settle or release checks nothing;
- a wallet's available balance never goes below zero after any of its operations (but the
  issuance wallet's);
- a transfer's balances stay within ``MAX_AMOUNT`` either way.

The history's ``posted_after``/``reserved_after`` are the row's balances after the write less
what the batch's later entries of that wallet moved (:attr:`WalletMove.entries`).

Pure: imports only the ledger's model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from gateway.ledger.model import MAX_AMOUNT, TransferKind

_INT64_MIN = -(2**63)


class Needs(IntEnum):
    """What a batch's operations need of a wallet's status (the strictest wins)."""

    NOTHING = 0
    RECEIVE = 1
    """Not closed: a credit, or the beneficiary of a new lock."""
    SEND = 2
    """Open: a debit, or a lock's reserve."""


_TRANSFER_OPS = frozenset(k.value for k in TransferKind)


@dataclass(frozen=True, slots=True)
class MovedEntry:
    """A history entry of a move: its after-balances are the row's, less ``rest_*``."""

    wallet_id: str
    op: str
    ref_id: str
    posted_delta: int
    reserved_delta: int
    rest_posted: int
    """What the batch's later entries of the wallet add to posted."""
    rest_reserved: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WalletMove:
    wallet_id: str
    posted_delta: int
    reserved_delta: int
    need: Needs
    """What the row's status must allow."""
    min_available: int
    """The least ``posted - reserved`` the row may have (ignored for the issuance wallet)."""
    posted_range: tuple[int, int]
    """The row's ``posted`` must lie within (inclusive), for transfers' balances to stay
    within ``MAX_AMOUNT`` either way."""
    written: bool
    """False: the wallet is only checked (a new lock's beneficiary), not written."""


@dataclass(frozen=True, slots=True)
class Moves:
    wallets: tuple[WalletMove, ...]
    """In wallet id order (the order rows are locked in)."""
    entries: tuple[MovedEntry, ...]
    """In the batch's order."""


def wallet_moves(entries: Sequence[Mapping[str, Any]], needs: Mapping[str, Needs]) -> Moves:
    """The moves of a batch's ``entries`` (the service's entry rows, in order) and the checks
    ``needs`` of the wallets it names."""
    totals: dict[str, list[int]] = {}
    """wallet -> [posted, reserved, lowest available, lowest posted, highest posted]"""
    for e in entries:
        t = totals.setdefault(e["wallet_id"], [0, 0, 0, 0, 0])
        t[0] += e["posted_delta"]
        t[1] += e["reserved_delta"]
        t[2] = min(t[2], t[0] - t[1])
        if e["op"] in _TRANSFER_OPS:
            t[3] = min(t[3], t[0])
            t[4] = max(t[4], t[0])
    rest = {w: [t[0], t[1]] for w, t in totals.items()}
    moved: list[MovedEntry] = []
    for e in entries:
        r = rest[e["wallet_id"]]
        r[0] -= e["posted_delta"]
        r[1] -= e["reserved_delta"]
        moved.append(
            MovedEntry(
                e["wallet_id"],
                e["op"],
                e["ref_id"],
                e["posted_delta"],
                e["reserved_delta"],
                r[0],
                r[1],
                e["created_at"],
            )
        )
    wallets = []
    for wallet_id in sorted(totals.keys() | needs.keys()):
        posted, reserved, lowest_available, lowest_posted, highest_posted = totals.get(
            wallet_id, (0, 0, 0, 0, 0)
        )
        wallets.append(
            WalletMove(
                wallet_id=wallet_id,
                posted_delta=posted,
                reserved_delta=reserved,
                need=needs.get(wallet_id, Needs.NOTHING),
                min_available=-lowest_available,
                posted_range=(
                    max(-MAX_AMOUNT - lowest_posted, _INT64_MIN),
                    min(MAX_AMOUNT - highest_posted, MAX_AMOUNT),
                ),
                written=wallet_id in totals,
            )
        )
    return Moves(tuple(wallets), tuple(moved))


__all__ = ["MovedEntry", "Moves", "Needs", "WalletMove", "wallet_moves"]
