"""The collateral log of a segregated wallet on the test's database, as the log service and
anchoring tests set it up: the wallets, transfers into and out of it, a log to integrate them
into."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from gateway.collateral import service
from gateway.collateral.note import Signer
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import CollateralSettings
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork

SEG = "segregated-test"
EXCHANGE = "exchange-a"
ORIGIN = "test.example/collateral/31337/0x00000000000000000000000000000000000000aa"


def uow_factory(engine: Engine) -> service.UowFactory:
    """The collateral service's units of work on ``engine``."""

    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    return uow


def make_log(**settings: object) -> CollateralLog:
    """The log of ``SEG`` under ``ORIGIN``, a fresh key, ``settings`` over the defaults."""
    return CollateralLog(
        wallet_id=SEG,
        origin=ORIGIN,
        signer=Signer.generate(ORIGIN),
        settings=CollateralSettings(**settings),  # type: ignore[arg-type]
    )


def setup_wallets(engine: Engine) -> None:
    """``SEG``, a funded ``EXCHANGE`` and another wallet (not segregated)."""
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id=SEG, kind=WalletKind.SEGREGATED_COLLATERAL, owner="stablecoin test"),
            OpenWallet(id=EXCHANGE, kind=WalletKind.EXCHANGE, owner="exchange a"),
            OpenWallet(id="other", kind=WalletKind.PARTICIPANT, owner="a bank"),
            Issue(id="issue-1", wallet_id=EXCHANGE, amount=1_000_000),
        ],
    )


def move(engine: Engine, tid: str, debit: str, credit: str, amount: int) -> None:
    """A posted transfer ``tid`` of ``amount`` from ``debit`` to ``credit``."""
    ledger.apply_one(
        LedgerUnitOfWork(engine),
        MakeTransfer(id=tid, debit_wallet_id=debit, credit_wallet_id=credit, amount=amount),
    )
