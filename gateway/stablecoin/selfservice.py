"""What an exchange sees of itself: its DT wallets, its mints, its redemptions. Reads only.

An exchange is the ``subject`` of its API keys; a key with none names no exchange and is
refused (``403 EXCHANGE_NOT_NAMED``) rather than shown what belongs to nobody.

Whose is a redemption: the exchange whose wallet its reference names. The watcher records that
exchange on every redemption it pays, and on a held one whose reference is an exchange wallet
(closed, or the payment refused). A held redemption recorded without one (before the watcher
recorded it, or by a version that did not) is found by its reference among the exchange's
wallets. One whose reference names no exchange wallet at all is nobody's: only an operator
sees it, until the operator pays it into an exchange's wallet, which makes it that exchange's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.ledger.model import Wallet, WalletKind
from gateway.stablecoin.endpoints import ExchangeNotNamed
from gateway.stablecoin.model import (
    Mint,
    MintCursorUnknown,
    MintState,
    Redemption,
    RedemptionState,
)
from gateway.stablecoin.service import UowFactory

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin


def _named(exchange: str) -> str:
    if not exchange:
        raise ExchangeNotNamed("the key has no subject: create exchange keys with --subject")
    return exchange


def wallets(uow: UowFactory, exchange: str) -> list[Wallet]:
    """The exchange's DT wallets (kind ``exchange``, owner = the exchange), by id."""
    read = uow(readonly=True)
    with read:
        return read.ledger.wallets_owned(_named(exchange), WalletKind.EXCHANGE)


def list_mints(
    uow: UowFactory,
    sc: Stablecoin,
    exchange: str,
    state: MintState | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Mint], str | None]:
    """The exchange's mints, oldest first, in one state or all; the cursor of the next page
    (the id of this page's last mint) when there is one."""
    read = uow(readonly=True)
    with read:
        if cursor is not None:
            after = read.stablecoin.mint(cursor)
            if after is None or after.exchange != _named(exchange):
                raise MintCursorUnknown(f"cursor {cursor!r} is not one of your mints")
        rows = read.stablecoin.mints_of(
            sc.contract, _named(exchange), limit + 1, state=state, after_id=cursor
        )
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


def list_redemptions(
    uow: UowFactory,
    sc: Stablecoin,
    exchange: str | None,
    state: RedemptionState | None,
    cursor: int | None,
    limit: int,
) -> tuple[list[Redemption], int | None]:
    """Redemptions oldest first, in one state or all: the exchange's (see the module
    docstring), or every one (``exchange`` None: an operator)."""
    read = uow(readonly=True)
    with read:
        refs: list[str] = []
        if exchange is not None:
            refs = [w.id for w in read.ledger.wallets_owned(_named(exchange), WalletKind.EXCHANGE)]
        rows = read.stablecoin.redemptions(
            sc.contract, exchange, cursor or 0, limit + 1, state=state, held_refs=refs
        )
    page = rows[:limit]
    return page, (page[-1].seq if len(rows) > limit else None)


__all__ = ["list_mints", "list_redemptions", "wallets"]
