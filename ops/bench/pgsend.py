"""What sending a pipeline's statements at its sync saves (``gateway/pgsend.py``): the same
transactions through psycopg's pipeline, sent statement by statement (psycopg's own way) and
at each sync, alternated, on a fresh PostgreSQL database.

A transaction is what a message's unit of work looks like: BEGIN, twelve small INSERTs, a
read waited for (a sync), an UPDATE and COMMIT (the second sync). Per transaction: the
client's CPU (this process, one thread), its backend's CPU (``/proc``) and the wall time.

Run: .venv/bin/python ops/bench/pgsend.py [--transactions N] [--rounds R] [--pg-admin-url URL]
Prints one line per mode and round and ends with one JSON line (medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgmeter import cpu_s, database_url

from gateway.pgsend import send_at_sync

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _transaction(conn: psycopg.Connection[Any], key: int, at_sync: bool) -> None:
    cur = conn.cursor()
    with conn.pipeline() as pipeline:
        if at_sync:
            send_at_sync(pipeline)
        cur.execute("BEGIN")
        for j in range(12):
            cur.execute("INSERT INTO t (id, a, b) VALUES (%s, %s, %s)", (key + j, "x" * 50, j))
        cur.execute("SELECT count(*) FROM t WHERE id = %s", (key,))
        pipeline.sync()
        row = cur.fetchone()
        assert row is not None and row[0] == 1
        cur.execute("UPDATE t SET b = b + 1 WHERE id = %s", (key,))
        cur.execute("COMMIT")


def _run(conn: psycopg.Connection[Any], n: int, start: int, at_sync: bool) -> dict[str, float]:
    pid = conn.info.backend_pid
    backend0, cpu0, wall0 = cpu_s(pid), time.process_time(), time.perf_counter()
    for i in range(n):
        _transaction(conn, (start + i) * 100, at_sync)
    return {
        "client_us": 1e6 * (time.process_time() - cpu0) / n,
        "backend_us": 1e6 * (cpu_s(pid) - backend0) / n,
        "wall_us": 1e6 * (time.perf_counter() - wall0) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN)
    args = parser.parse_args()
    name = f"dtg_bench_pgsend_{secrets.token_hex(4)}"
    with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = database_url(args.pg_admin_url, name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, a TEXT, b BIGINT)")
            _run(conn, 200, 0, at_sync=False)  # warm-up: statements prepared
            results: dict[str, list[dict[str, float]]] = {"per_statement": [], "at_sync": []}
            start = 1000
            for r in range(args.rounds):
                for mode in results:
                    got = _run(conn, args.transactions, start, at_sync=mode == "at_sync")
                    start += args.transactions
                    results[mode].append(got)
                    print(
                        f"round {r + 1} {mode:13}  client {got['client_us']:6.0f} µs CPU,"
                        f" backend {got['backend_us']:6.0f} µs CPU,"
                        f" wall {got['wall_us']:6.0f} µs per transaction"
                    )
    finally:
        with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    figures = {
        f"{mode}_{k}": round(statistics.median(r[k] for r in runs), 1)
        for mode, runs in results.items()
        for k in ("client_us", "backend_us", "wall_us")
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
