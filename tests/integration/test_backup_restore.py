"""Backup and restore as docs/operations.md tells an operator to do them, with the real
commands: ``dt-gateway db backup`` of a SQLite database while transfers keep committing, and
``pg_dump`` / ``pg_restore`` (then ``ANALYZE``) of PostgreSQL; each copy restored and checked with
``dt-gateway ledger check`` (conservation and balances) and ``dt-gateway db current``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.ledger import service as ledger
from gateway.ledger.model import (
    CommitLock,
    CreateLock,
    Issue,
    MakeTransfer,
    OpenWallet,
    Redeem,
    WalletKind,
)
from gateway.ledger.store import LedgerUnitOfWork
from tests.support.databases import migrated_engine

BIN = Path(sys.executable).parent / "dt-gateway"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    env["DT_GATEWAY_DATABASE__URL"] = url
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _book(engine: Engine) -> None:
    """Wallets, issuance, transfers, a redemption, a lock committed and one left open."""
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id="bank-a", kind=WalletKind.PARTICIPANT, owner="a"),
            OpenWallet(id="bank-b", kind=WalletKind.PARTICIPANT, owner="b"),
            Issue(id="iss-1", wallet_id="bank-a", amount=10_000_000),
            MakeTransfer(id="t-1", debit_wallet_id="bank-a", credit_wallet_id="bank-b", amount=1),
            Redeem(id="red-1", wallet_id="bank-b", amount=1),
            CreateLock(id="lock-1", debit_wallet_id="bank-a", credit_wallet_id="bank-b", amount=5),
            CreateLock(id="lock-2", debit_wallet_id="bank-a", credit_wallet_id="bank-b", amount=7),
            CommitLock(id="lock-1"),
        ],
    )


def _restored_is_sound(url: str) -> dict[str, Any]:
    current = _cli(url, "db", "current")
    assert current.returncode == 0, current.stderr
    assert json.loads(current.stdout)["up_to_date"] is True
    check = _cli(url, "ledger", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    report: dict[str, Any] = json.loads(check.stdout)
    assert report["ok"] is True and report["violations"] == []
    return report


def _transfers(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM ledger_transfer")).scalar_one())
    finally:
        engine.dispose()


def _while_writing(engine: Engine, work: Callable[[], None]) -> int:
    """Run ``work`` while another thread commits transfers; how many it committed."""
    stop = threading.Event()
    done = [0]
    started = threading.Event()

    def write() -> None:
        while not stop.is_set():
            ledger.apply(
                LedgerUnitOfWork(engine),
                [
                    MakeTransfer(
                        id=f"busy-{done[0]}",
                        debit_wallet_id="bank-a",
                        credit_wallet_id="bank-b",
                        amount=3,
                    )
                ],
            )
            done[0] += 1
            started.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert started.wait(30)
    try:
        work()
    finally:
        stop.set()
        writer.join(30)
    return done[0]


def test_sqlite_online_backup_restores_a_sound_ledger(tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'live' / 'gateway.db'}"
    engine = migrated_engine(source_url)
    _book(engine)
    backup = tmp_path / "backups" / "gateway-backup.db"
    result: list[subprocess.CompletedProcess[str]] = []
    written = _while_writing(
        engine, lambda: result.append(_cli(source_url, "db", "backup", str(backup)))
    )
    assert result[0].returncode == 0, result[0].stderr
    made = json.loads(result[0].stdout)
    assert made["backup"] == str(backup.resolve()) and made["bytes"] == backup.stat().st_size
    assert not list(backup.parent.glob("*.partial"))
    engine.dispose()

    # Restore: the gateway stopped, the copy put in place of the database (no -wal beside it).
    restored = tmp_path / "restored" / "gateway.db"
    restored.parent.mkdir()
    shutil.copyfile(backup, restored)
    restored_url = f"sqlite:///{restored}"
    report = _restored_is_sound(restored_url)
    assert (report["total_posted"], report["issued_minus_redeemed"]) == (0, 10_000_000 - 1)
    copied = _transfers(restored_url) - 4  # the booked issuance, transfer, redemption, lock
    assert 1 <= copied <= written  # a snapshot taken in the middle of the writes


def test_sqlite_backup_refuses_postgresql_and_names_pg_dump(tmp_path: Path) -> None:
    done = _cli("postgresql+psycopg://postgres@127.0.0.1:5432/none", "db", "backup", "x.db")
    assert done.returncode == 1 and "pg_dump" in done.stderr


@pytest.mark.postgres
def test_pg_dump_and_pg_restore_give_a_sound_ledger(
    pg_database_factory: Callable[[], str], tmp_path: Path
) -> None:
    if not all(shutil.which(tool) for tool in ("pg_dump", "pg_restore", "psql")):
        pytest.skip("pg_dump, pg_restore and psql are not installed")
    source_url = pg_database_factory()
    engine = migrated_engine(source_url)
    _book(engine)
    dump = tmp_path / "gateway.dump"

    def dump_it() -> None:
        done = subprocess.run(
            ["pg_dump", "--format=custom", "--file", str(dump), _libpq(source_url)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    _while_writing(engine, dump_it)
    engine.dispose()
    target_url = pg_database_factory()
    done = subprocess.run(
        ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", _libpq(target_url), str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # A restore brings no statistics: the plans would be made for empty tables.
    analyzed = subprocess.run(
        ["psql", _libpq(target_url), "-c", "ANALYZE"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert analyzed.returncode == 0, analyzed.stderr
    restored = sa.create_engine(target_url)
    with restored.connect() as conn:
        stats = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'ledger_wallet'"
        )
        assert stats.scalar_one() > 0  # column statistics: made by ANALYZE only
    restored.dispose()
    report = _restored_is_sound(target_url)
    assert (report["total_posted"], report["issued_minus_redeemed"]) == (0, 10_000_000 - 1)


def _libpq(url: str) -> str:
    """The URL as libpq's tools take it (no SQLAlchemy driver name)."""
    return "postgresql://" + url.split("://", 1)[1]
