"""Ledger benchmark: lock+commit pairs per second, durable settings, SQLite and PostgreSQL.

- single: every operation is its own transaction (a lock, then its commit), through the
  service layer, as the HTTP API runs it; measured with 1 client and with several concurrent
  clients (a server has several), each client on its own pair of wallets;
- single grouped: the same single operations through the group committer (what the HTTP API
  uses): concurrent callers' operations share one transaction and one fsync, each caller still
  getting its own result; measured with 1 and 16 concurrent clients;
- batched: 100 locks in one batch transaction, then their 100 commits in another.

SQLite runs WAL with FULL durability (group commit, gateway.sqlite.walsync); PostgreSQL runs with
its defaults (fsync on, synchronous_commit on), on a fresh database created and dropped here.
Beside each figure: the benchmark process's CPU per pair (all its threads: the service layer,
the driver), and for PostgreSQL the statements and round trips per pair, counted in the driver
(``ops/bench/pgcount.py``), and the transactions. Usage:

    .venv/bin/python ops/bench/ledger.py [--pairs N] [--workers W] [--pg-admin-url URL] [--no-pg]

The last line is one JSON object (PostgreSQL's single 1-client run's counts per pair, and the
CPU per pair of the benchmark and of PostgreSQL's backends in it and in the batched 1-client
run, under ``pg_*_per_pair``). Each PostgreSQL line also prints the rate the CPU of a pair in
all (the benchmark's and the backends') allows on this machine's CPUs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from gateway.config import DatabaseSettings
from gateway.db import make_engine, upgrade
from gateway.ledger import service
from gateway.ledger.group import GroupCommitter
from gateway.ledger.model import CommitLock, CreateLock, Issue, OpenWallet, Operation, WalletKind
from gateway.ledger.store import LedgerUnitOfWork

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgcount
from pgmeter import backends_cpu_s, database_url

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def setup(engine: sa.Engine, clients: int) -> None:
    ops: list[Operation] = []
    for c in range(clients):
        ops += [
            OpenWallet(f"src-{c}", WalletKind.PARTICIPANT, "bench"),
            OpenWallet(f"dst-{c}", WalletKind.PARTICIPANT, "bench"),
            Issue(f"fund-{c}", f"src-{c}", 10**15),
        ]
    service.apply(LedgerUnitOfWork(engine), ops)


def _pair_ops(client: int, i: int, prefix: str) -> tuple[CreateLock, CommitLock]:
    secret = hashlib.sha256(f"{prefix}{client}-{i}".encode()).digest()
    lock = CreateLock(
        id=f"{prefix}-{client}-{i}",
        debit_wallet_id=f"src-{client}",
        credit_wallet_id=f"dst-{client}",
        amount=100,
        condition=hashlib.sha256(secret).hexdigest(),
    )
    return lock, CommitLock(id=lock.id, fulfilment=secret.hex())


def run_single(
    engine: sa.Engine, pairs: int, clients: int, prefix: str, *, grouped: bool = False
) -> tuple[float, int]:
    """One operation per call. ``grouped``: calls go through the group committer, as the HTTP
    API's do, so concurrent callers share transactions (and fsyncs)."""
    per_client = pairs // clients
    work = [[_pair_ops(c, i, prefix) for i in range(per_client)] for c in range(clients)]
    committer = GroupCommitter(lambda: LedgerUnitOfWork(engine)) if grouped else None

    def client(c: int) -> None:
        uow = LedgerUnitOfWork(engine)
        for lock, commit in work[c]:
            if committer is not None:
                committer.submit(lock)
                committer.submit(commit)
            else:
                service.apply_one(uow, lock)
                service.apply_one(uow, commit)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if committer is not None:
        committer.stop()
    return per_client * clients / elapsed, per_client * clients


def run_batched(
    engine: sa.Engine, pairs: int, clients: int, prefix: str, size: int = 100
) -> tuple[float, int]:
    per_client = pairs // clients // size * size
    work = [[_pair_ops(c, i, prefix) for i in range(per_client)] for c in range(clients)]

    def client(c: int) -> None:
        uow = LedgerUnitOfWork(engine)
        for start in range(0, per_client, size):
            chunk = work[c][start : start + size]
            service.apply(uow, [lock for lock, _ in chunk])
            service.apply(uow, [commit for _, commit in chunk])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_client * clients / (time.perf_counter() - start), per_client * clients


Figures = dict[str, tuple[float, dict[str, float]]]
"""Per run: lock+commit pairs per second, and per pair the process's CPU (``cpu_us``) and, on
PostgreSQL, the driver's counters."""


def bench(url: str, pairs: int, workers: int, counts: Path | None = None) -> Figures:
    engine = make_engine(DatabaseSettings(url=url, pool_size=max(workers, 2)))
    upgrade(engine)
    setup(engine, max(workers, 16))
    run_single(engine, min(pairs, 200), 1, "warm")
    run_batched(engine, 5000, 1, "warmb")
    if engine.dialect.name == "postgresql":
        # As autovacuum does in a running system: the plans that the connections keep for
        # their prepared statements, made while the tables were nearly empty, scan them whole
        # and stay until the tables are analyzed (a server may run without autovacuum, and a
        # short run ends before its first round).
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    def counted(run: Callable[[], tuple[float, int]]) -> tuple[float, dict[str, float]]:
        before = pgcount.read(counts) if counts else None
        backends = _backends_cpu(engine) if counts else {}
        cpu = time.process_time()
        rate, n = run()
        per_pair = {"cpu_us": (time.process_time() - cpu) * 1e6 / n}
        if counts is not None and before is not None:
            per_pair.update(pgcount.per(before, pgcount.read(counts), n))
            after = _backends_cpu(engine)
            used = sum(v - backends.get(pid, 0.0) for pid, v in after.items())
            per_pair["backends_cpu_us"] = used * 1e6 / n
        return rate, per_pair

    runs: dict[str, Callable[[], tuple[float, int]]] = {
        "single_1_client": lambda: run_single(engine, pairs, 1, "s1"),
        f"single_{workers}_clients": lambda: run_single(engine, pairs, workers, "sn"),
        "single_grouped_1_client": lambda: run_single(engine, pairs, 1, "g1", grouped=True),
        "single_grouped_16_clients": lambda: run_single(engine, pairs * 2, 16, "g16", grouped=True),
        "batched_1_client": lambda: run_batched(engine, pairs * 10, 1, "b1"),
        f"batched_{workers}_clients": lambda: run_batched(engine, pairs * 10, workers, "bn"),
    }
    out = {name: counted(run) for name, run in runs.items()}
    report = service.check_invariants(LedgerUnitOfWork(engine))
    assert report.ok, report.violations
    engine.dispose()
    return out


def _backends_cpu(engine: sa.Engine) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend of the benchmark's database (its pool's
    connections, which last the run; one that ended in between is not counted)."""
    with engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).scalars()
        return backends_cpu_s(pids)


def _line(db: str, name: str, value: float, per_pair: dict[str, float]) -> str:
    """One run's printed line: pairs/s, and per pair the benchmark's CPU; on PostgreSQL the
    driver's counts, the backends' CPU, and the rate both allow on this machine's CPUs."""
    line = f"{db:<11} {name:<26} {value:>10,.0f} lock+commit pairs/s"
    line += f"   per pair: {per_pair['cpu_us']:,.0f} µs CPU"
    if "statements" in per_pair:
        cpus = len(os.sched_getaffinity(0))
        in_all = per_pair["cpu_us"] + per_pair["backends_cpu_us"]
        line += (
            f", {per_pair['statements']:.2f} statements,"
            f" {per_pair['round_trips']:.2f} round trips,"
            f" {per_pair['transactions']:.2f} transactions,"
            f" backends {per_pair['backends_cpu_us']:,.0f} µs CPU"
            f" (in all: at most {cpus * 1e6 / in_all:,.0f} pairs/s on {cpus} CPUs)"
        )
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN)
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = bench(f"sqlite:///{Path(tmp) / 'bench.db'}", args.pairs, args.workers)
        counts = Path(tmp) / "pg-counts"
        if not args.no_pg:
            pgcount.install(counts)
            results["postgresql"] = _bench_pg(args, counts)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for db, figures in results.items():
        for name, (value, per_pair) in figures.items():
            print(_line(db, name, value, per_pair))
    sqlite = {k: v for k, (v, _) in results["sqlite"].items()}
    summary: dict[str, float] = {
        "sqlite_single_pairs_per_s": round(
            max(sqlite[k] for k in sqlite if k.startswith("single"))
        ),
        "sqlite_batched_pairs_per_s": round(
            max(sqlite[k] for k in sqlite if k.startswith("batched"))
        ),
    }
    if "postgresql" in results:
        pg = {k: v for k, (v, _) in results["postgresql"].items()}
        summary["pg_single_pairs_per_s"] = round(max(pg[k] for k in pg if k.startswith("single")))
        summary["pg_batched_pairs_per_s"] = round(max(pg[k] for k in pg if k.startswith("batched")))
        one = results["postgresql"]["single_1_client"][1]
        summary["pg_single_round_trips_per_pair"] = round(one["round_trips"], 2)
        summary["pg_single_statements_per_pair"] = round(one["statements"], 2)
        summary["pg_single_cpu_us_per_pair"] = round(one["cpu_us"])
        batched = results["postgresql"]["batched_1_client"][1]
        summary["pg_batched_cpu_us_per_pair"] = round(batched["cpu_us"])
        summary["pg_single_backends_cpu_us_per_pair"] = round(one["backends_cpu_us"])
        summary["pg_batched_backends_cpu_us_per_pair"] = round(batched["backends_cpu_us"])
    print(json.dumps(summary))


def _bench_pg(args: argparse.Namespace, counts: Path) -> Figures:
    """The PostgreSQL runs, on a database of their own, dropped at the end."""
    admin = sa.create_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"dtg_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = database_url(args.pg_admin_url, name)
        return bench(url, args.pairs, args.workers, counts)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
