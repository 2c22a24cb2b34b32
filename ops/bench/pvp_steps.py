"""Statements and round trips to PostgreSQL per step of a PvP's messages at the gateway.

The PvP benchmark (``ops/bench/pvp.py --db postgresql``) counts a whole process, its jobs and
its deliveries included; this drives the gateway's use cases for each message directly, in
this process, on a fresh PostgreSQL database (created and dropped here), and counts each step
in the driver (``ops/bench/pgcount.py``):

- a pacs.009 received and applied in the receiving transaction (the DT amount locked, its
  pacs.002 ACSP queued): what the reception threads do while the workers have no backlog;
- the connector's decision (a pacs.002 with the fulfilment) received and applied (the lock
  committed, the ACSC queued);
- the same two messages under a backlog: stored with an inbox item by the reception, then
  applied by an inbox worker, one transaction each.

Nothing is sent: the replies stay queued in the outbox. The figures are per message, averaged
over ``--pvps`` PvPs after as many warm-up ones (psycopg prepares a statement at its fifth use
on a connection). Usage:

    .venv/bin/python ops/bench/pvp_steps.py [--pvps N] [--pg-admin-url URL]

The last line is one JSON object: per step, statements, round trips and transactions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from gateway.config import DatabaseSettings
from gateway.db import make_engine, upgrade
from gateway.iso20022 import (
    CreditTransfer,
    Money,
    OriginalRef,
    Pacs002,
    Pacs009,
    PvPTerms,
    TransactionStatus,
    build,
    header_for,
    sign_envelope,
)
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.pvp import inbox, reception
from gateway.pvp.context import PvPContext
from gateway.pvp.keys import generate
from gateway.pvp.store import PvPUnitOfWork

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgcount
from pgmeter import database_url

T = TypeVar("T")
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
GATEWAY_BIC = "NBKZKZKAXXX"
CONNECTOR_BIC = "SWHQBEBBXXX"
DEBTOR, CREDITOR = "hsbk-dt", "cbuae-dt"
SECRET = secrets.token_bytes(32)
CONDITION = hashlib.sha256(SECRET).hexdigest()
STEPS = (
    "pacs.009 applied on receipt",
    "decision applied on receipt",
    "pacs.009 stored",
    "pacs.009 applied from the inbox",
    "decision stored",
    "decision applied from the inbox",
)


class Messages:
    """The connector's side: its signed pacs.009 and decisions for one-leg PvPs."""

    def __init__(self) -> None:
        self.identity = generate(CONNECTOR_BIC)

    def _envelope(self, message: Pacs009 | Pacs002) -> bytes:
        header = header_for(message, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC)
        return sign_envelope(build(message, header), self.identity.key_pem, self.identity.cert_pem)

    def pacs009(self, uetr: str, msg_id: str) -> bytes:
        due = datetime.now(UTC) + timedelta(minutes=5)
        tx = CreditTransfer(
            end_to_end_id=f"E2E-{msg_id}",
            uetr=uetr,
            amount=Money(100, "KZT"),
            settlement_date=due.date(),
            debtor_bic="HSBKKZKXXXX",
            debtor_account=DEBTOR,
            debtor_agent_bic=GATEWAY_BIC,
            creditor_agent_bic=GATEWAY_BIC,
            creditor_bic="CBAUAEAAXXX",
            creditor_account=CREDITOR,
            deadline=due.timetz(),
            pvp=PvPTerms(f"PVP-{msg_id}", "DT", CONDITION),
        )
        return self._envelope(Pacs009(msg_id, datetime.now(UTC), (tx,)))

    def decision(self, uetr: str, msg_id: str) -> bytes:
        original = OriginalRef(msg_id, "pacs.009.001.08", f"E2E-{msg_id}", uetr)
        terms = PvPTerms(f"PVP-{msg_id}", "DT", CONDITION, SECRET.hex())
        status = TransactionStatus(original, "ACSP", pvp=terms)
        return self._envelope(Pacs002(f"D-{msg_id}", datetime.now(UTC), (status,)))


def context(messages: Messages) -> PvPContext:
    gateway = generate(GATEWAY_BIC)
    return PvPContext(
        gateway_bic=GATEWAY_BIC,
        connector_bic=CONNECTOR_BIC,
        connector_url="http://127.0.0.1:9",
        connector_cert_pem=messages.identity.cert_pem.decode(),
        signer=lambda: gateway,
    )


class Steps:
    """The gateway's use cases for each message, each counted on its own."""

    def __init__(self, engine: sa.Engine, counts: Path) -> None:
        self.engine = engine
        self.counts = counts
        self.messages = Messages()
        self.ctx = context(self.messages)
        self.totals = {step: dict.fromkeys(pgcount.FIELDS, 0) for step in STEPS}

    def uow(self) -> PvPUnitOfWork:
        # As the reception threads and the inbox workers use it: replies claimed to send.
        return PvPUnitOfWork(self.engine, claim_outbound_for=timedelta(seconds=30))

    def _counted(self, step: str, run: Callable[[], T]) -> T:
        before = pgcount.read(self.counts)
        result = run()
        after = pgcount.read(self.counts)
        for k in pgcount.FIELDS:
            self.totals[step][k] += after[k] - before[k]
        return result

    def _receive(self, raw: bytes, *, process: bool) -> reception.Reception:
        got = reception.receive_messages(self.uow(), [raw], self.ctx, process=process)
        [ack] = got.outcomes
        if not isinstance(ack, reception.Ack) or ack.duplicate:
            raise SystemExit(f"refused: {ack}")
        return got

    def on_receipt(self) -> None:
        uetr, mid = str(uuid.uuid4()), f"P9-{secrets.token_hex(6)}"
        p9, decision = self.messages.pacs009(uetr, mid), self.messages.decision(uetr, mid)
        self._counted(STEPS[0], lambda: self._receive(p9, process=True))
        self._counted(STEPS[1], lambda: self._receive(decision, process=True))

    def from_inbox(self) -> None:
        uetr, mid = str(uuid.uuid4()), f"P9-{secrets.token_hex(6)}"
        for raw, stored, applied in (
            (self.messages.pacs009(uetr, mid), STEPS[2], STEPS[3]),
            (self.messages.decision(uetr, mid), STEPS[4], STEPS[5]),
        ):
            got = self._counted(stored, lambda raw=raw: self._receive(raw, process=False))
            self._counted(
                applied, lambda got=got: inbox.process_items(self.uow(), got.inbox, self.ctx)
            )

    def reset(self) -> None:
        self.totals = {step: dict.fromkeys(pgcount.FIELDS, 0) for step in STEPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pvps", type=int, default=50)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN)
    args = parser.parse_args()

    name = f"dtg_bench_steps_{secrets.token_hex(4)}"
    admin = sa.create_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    counts = Path(tempfile.mkdtemp(prefix="dtgw-steps-")) / "counts"
    pgcount.install(counts)
    engine = make_engine(DatabaseSettings(url=database_url(args.pg_admin_url, name)))
    try:
        upgrade(engine)
        ledger.apply(
            LedgerUnitOfWork(engine),
            [
                OpenWallet(DEBTOR, WalletKind.PARTICIPANT, "hsbk"),
                OpenWallet(CREDITOR, WalletKind.PARTICIPANT, "cbuae"),
                Issue("fund", DEBTOR, 10**12),
            ],
        )
        steps = Steps(engine, counts)
        for _ in range(args.pvps):  # warm-up: statements prepared, caches filled
            steps.on_receipt()
            steps.from_inbox()
        steps.reset()
        for _ in range(args.pvps):
            steps.on_receipt()
            steps.from_inbox()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    figures = {}
    print(f"per message, averaged over {args.pvps} PvPs:")
    for step, total in steps.totals.items():
        per = {k: round(v / args.pvps, 2) for k, v in total.items()}
        figures[step] = per
        print(
            f"  {step}: {per['statements']:.1f} statements, {per['round_trips']:.1f} round trips,"
            f" {per['transactions']:.1f} transactions"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
