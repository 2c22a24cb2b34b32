"""The logs the proof-of-collateral benchmark (``ops/bench/collateral.py``) measures: SQLite
files (durable settings, migrated) holding the segregated wallet, histories pooled as entries
and the integrator that sequences them into the log.

Every part starts from its own database file, so no part measures another's leftovers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.collateral import entries as fmt
from gateway.collateral import service
from gateway.collateral.note import Signer
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import CollateralSettings, DatabaseSettings
from gateway.db import make_engine, upgrade
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork

SEG = "segregated-bench"
ORIGIN = "bench.example/collateral/31337/0x00000000000000000000000000000000000000be"
"""Chain 31337, the chain id the bench's stand-in RPC answers."""


def engine_at(path: Path) -> sa.Engine:
    """A migrated SQLite database at ``path``."""
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    upgrade(engine)
    return engine


def uow_factory(engine: sa.Engine) -> service.UowFactory:
    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    return uow


def collateral_log(signer: Signer, **settings: Any) -> CollateralLog:
    """The segregated wallet's log, signed by ``signer``, with these collateral settings."""
    return CollateralLog(SEG, ORIGIN, signer, CollateralSettings(**settings))


def open_wallets(engine: sa.Engine, clients: int) -> None:
    """The segregated wallet, and per client an exchange wallet ``x-<c>`` funded to pay it."""
    ops: list[Any] = [OpenWallet(id=SEG, kind=WalletKind.SEGREGATED_COLLATERAL, owner="bench")]
    for c in range(clients):
        ops += [
            OpenWallet(id=f"x-{c}", kind=WalletKind.EXCHANGE, owner="bench"),
            Issue(id=f"fund-{c}", wallet_id=f"x-{c}", amount=10**15),
        ]
    ledger.apply(LedgerUnitOfWork(engine), ops)


def pool_bodies(engine: sa.Engine, start: int, count: int, balance: int = 0) -> int:
    """Pool ``count`` already-encoded DT movements of +1 each (a valid history to replay)."""
    now = datetime.now(UTC)
    t = service.rfc3339(now)
    chunk = 20_000
    for lo in range(0, count, chunk):
        rows = []
        for i in range(lo, min(count, lo + chunk)):
            balance += 1
            body = fmt.encode(
                fmt.DtMovement(
                    transfer_id=f"t-{start + i}", op="transfer", amount=1, balance=balance, time=t
                )
            )
            rows.append(
                {
                    "wallet_id": SEG,
                    "kind": "dt",
                    "body": body.decode(),
                    "transfer_id": f"t-{start + i}",
                    "created_at": now,
                }
            )
        uow = CollateralUnitOfWork(engine)
        with uow:
            uow.collateral.add_pending_many(rows)
            uow.commit()
    return balance


def drain(engine: sa.Engine, clog: CollateralLog) -> int:
    """Integrate until nothing is pooled; how many entries that added."""
    total = 0
    while (done := service.integrate(uow_factory(engine), clog)).added:
        total += done.added
    return total
