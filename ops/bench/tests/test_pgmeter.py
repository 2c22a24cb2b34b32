"""The PvP benchmark's PostgreSQL arithmetic (``ops/bench/pgmeter.py``): a party's processes
(gateway replicas) count together, and per PvP is per PvP; and its ANALYZE after the warm-up
reaches each party's database."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import pgcount  # noqa: E402
from pgmeter import PgMeter, database_url  # noqa: E402


def _write(folder: Path, pid: int, statements: int, round_trips: int, transactions: int) -> None:
    (folder / str(pid)).write_bytes(
        struct.pack(pgcount._FORMAT, statements, round_trips, transactions)
    )


def test_the_counters_of_a_partys_processes_add_up(tmp_path: Path) -> None:
    meter = PgMeter("postgresql+psycopg://unused/postgres", tmp_path)
    _write(tmp_path, 11, 100, 20, 5)
    _write(tmp_path, 12, 50, 10, 3)
    both = meter.counters([11, 12])
    assert both == {"statements": 150, "round_trips": 30, "transactions": 8}
    assert meter.counters([13]) == {"statements": 0, "round_trips": 0, "transactions": 0}


def test_a_report_is_per_pvp_for_each_party() -> None:
    zero = {"statements": 0.0, "round_trips": 0.0, "transactions": 0.0}
    before = {"gateway": zero, "connector": zero, "backends": {"7": 1.0}}
    after = {
        "gateway": {"statements": 300.0, "round_trips": 60.0, "transactions": 20.0},
        "connector": {"statements": 100.0, "round_trips": 40.0, "transactions": 10.0},
        "backends": {"7": 1.5, "8": 0.5},  # a backend that started meanwhile counts whole
    }
    figures = PgMeter.report(before, after, 10)
    assert figures == {
        "gateway_statements": 30.0,
        "gateway_round_trips": 6.0,
        "connector_statements": 10.0,
        "connector_round_trips": 4.0,
        "backends_cpu_ms": 100.0,
    }


def test_analyze_gives_each_partys_tables_their_statistics(tmp_path: Path) -> None:
    meter = PgMeter("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", tmp_path)
    try:
        urls = meter.create()
    except sa.exc.OperationalError:
        if os.environ.get("CI"):
            raise
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432")
    try:
        for url in urls.values():
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t AS SELECT generate_series(1, 500) AS n")
            engine.dispose()
        meter.analyze()
        for url in urls.values():
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = 't'")
                assert rows.scalar_one() == 500
            engine.dispose()
    finally:
        meter.drop()


def test_a_partys_database_is_on_the_admin_urls_server_through_its_socket_too() -> None:
    socket = "postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql"
    tcp = "postgresql+psycopg://u:p%40ss@127.0.0.1:5432/postgres"
    assert database_url(tcp, "dtg_x") == "postgresql+psycopg://u:p%40ss@127.0.0.1:5432/dtg_x"
    url = sa.engine.make_url(database_url(socket, "dtg_x"))
    assert (url.database, url.host, dict(url.query)) == (
        "dtg_x",
        None,
        {"host": "/var/run/postgresql"},
    )
