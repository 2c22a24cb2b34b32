"""A gateway's collateral log on a real database, and witnesses run in this process: what the
tests of witnessing (the gateway's side) and of split views share."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from gateway.collateral import note, service
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.collateral.witness import Witness, WitnessState
from gateway.collateral.witness_server import serving
from gateway.config import load_settings
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork

SEG = "segregated-witnessed"
_ids = itertools.count()


@dataclass
class RunningWitness:
    witness: Witness
    url: str

    @property
    def vkey(self) -> str:
        return self.witness.vkey()

    def setting(self) -> dict[str, str]:
        return {"url": self.url, "vkey": self.vkey}


@contextmanager
def running_witness(
    data: Path, logs: list[note.Verifier], name: str = "witness.test/w1", port: int = 0
) -> Iterator[RunningWitness]:
    """A witness with its state in ``data``, served on 127.0.0.1 while the block runs."""
    data.mkdir(parents=True, exist_ok=True)
    state = WitnessState(data / "witness.db")
    key = data / "cosigner.key"
    if key.exists():
        signer = note.Signer.from_skey(key.read_text())
    else:
        signer = note.Signer.generate(name)
        key.write_text(signer.skey())
    witness = Witness(note.Cosigner(signer.name, signer.private_key), logs, state)
    try:
        with serving(witness, port=port) as url:
            yield RunningWitness(witness, url)
    finally:
        state.close()


def open_wallets(engine: Engine) -> None:
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id=SEG, kind=WalletKind.SEGREGATED_COLLATERAL, owner="stablecoin"),
            OpenWallet(id="x", kind=WalletKind.EXCHANGE, owner="exchange"),
            Issue(id="fund", wallet_id="x", amount=10**12),
        ],
    )


def deposit(engine: Engine, n: int, amount: int = 5) -> None:
    """``n`` DT transfers into the segregated wallet: ``n`` entries in the pool."""
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            MakeTransfer(
                id=f"d-{next(_ids)}", debit_wallet_id="x", credit_wallet_id=SEG, amount=amount
            )
            for _ in range(n)
        ],
    )


def uow_factory(engine: Engine) -> service.UowFactory:
    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    return uow


def make_log(
    signer: note.Signer, witnesses: list[dict[str, str]], **collateral: Any
) -> CollateralLog:
    settings = load_settings(
        environ={},
        collateral={
            "rate_per_second": 10_000,
            "rate_burst": 100_000,
            "witnesses": witnesses,
            **collateral,
        },
    )
    return CollateralLog(SEG, signer.name, signer, settings.collateral)


def integrate(engine: Engine, clog: CollateralLog, now: datetime | None = None) -> int:
    """Integrates the whole pool; returns the tree size."""
    size = -1
    while True:
        done = service.integrate(uow_factory(engine), clog, now)
        size = done.size
        if not done.added:
            return size
