"""The pipeline benchmark (``ops/bench/pgsend.py``) runs both ways on a fresh database, and a
transaction it times does what it says in either (every row written and committed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import pgsend  # noqa: E402


def _admin() -> psycopg.Connection:  # type: ignore[type-arg]
    try:
        return psycopg.connect(pgsend.PG_ADMIN, autocommit=True)
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432")


def _benchmarks_databases() -> set[str]:
    with _admin() as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'dtg_bench_pgsend_%'"
        )
        return {r[0] for r in rows}


def test_both_ways_end_with_their_figures_and_drop_their_database() -> None:
    before = _benchmarks_databases()
    out = subprocess.run(
        [sys.executable, str(BENCH / "pgsend.py"), "--transactions", "20", "--rounds", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    for mode in ("per_statement", "at_sync"):
        assert figures[f"{mode}_client_us"] > 0 and figures[f"{mode}_wall_us"] > 0
    assert _benchmarks_databases() == before


def test_a_transaction_commits_its_rows_either_way() -> None:
    with _admin() as admin:
        admin.execute("DROP DATABASE IF EXISTS dtg_test_pgsend_commits WITH (FORCE)")
        admin.execute("CREATE DATABASE dtg_test_pgsend_commits")
    try:
        url = pgsend.PG_ADMIN.rsplit("/", 1)[0] + "/dtg_test_pgsend_commits"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, a TEXT, b BIGINT)")
            pgsend._transaction(conn, 0, at_sync=False)
            pgsend._transaction(conn, 100, at_sync=True)
            rows = conn.execute("SELECT count(*), sum(b) FROM t").fetchone()
            assert rows == (24, 2 * (sum(range(12)) + 1))
    finally:
        with _admin() as admin:
            admin.execute("DROP DATABASE IF EXISTS dtg_test_pgsend_commits WITH (FORCE)")
