"""The PvP benchmark's PostgreSQL side (``ops/bench/pvp.py --db postgresql``): a fresh database
per party, and per PvP the statements and round trips each party's processes made (counted in
their driver, ``pgcount``) and the CPU of their PostgreSQL backends."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pgcount
import sqlalchemy as sa

PARTIES = ("gateway", "connector")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends_cpu_s(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds so far of these PostgreSQL backends, by pid (one that has ended is left
    out)."""
    out = {}
    for pid in pids:
        try:
            out[pid] = cpu_s(pid)
        except OSError:  # the backend ended
            continue
    return out


def database_url(admin_url: str, name: str) -> str:
    """The URL of the database ``name`` on ``admin_url``'s server, whatever else the URL says
    (``?host=/var/run/postgresql``: the server's Unix socket, docs/operations.md)."""
    url = sa.engine.make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False)


class PgMeter:
    """Both parties on PostgreSQL: a fresh database each (dropped by :meth:`drop`), their
    processes' driver counters and their backends' CPU. A party may run several processes
    (gateway replicas on one database): their counters add up."""

    def __init__(self, admin_url: str, counts: Path) -> None:
        self.admin_url = admin_url
        self.counts = counts
        self.names: dict[str, str] = {}

    def create(self) -> dict[str, str]:
        """Create one database per party; their URLs by party."""
        tag = secrets.token_hex(4)
        self.names = {p: f"dtg_bench_{p}_{tag}" for p in PARTIES}
        self._admin(*(f'CREATE DATABASE "{n}"' for n in self.names.values()))
        return {p: self._url(n) for p, n in self.names.items()}

    def analyze(self) -> None:
        """ANALYZE each party's database, as autovacuum does in a running system: the plans
        its processes' connections keep for their prepared statements are made again, for
        tables of the size they have now (made while the tables were nearly empty, they scan
        them whole; a server may run without autovacuum, and a short benchmark ends before
        its first round)."""
        for name in self.names.values():
            _run(self._url(name), "ANALYZE")

    def drop(self) -> None:
        self._admin(*(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in self.names.values()))

    def _admin(self, *statements: str) -> list[list[Any]]:
        """Run ``statements`` on the server, outside any transaction; their rows."""
        return _run(self.admin_url, *statements)

    def _url(self, name: str) -> str:
        """The URL of the database ``name`` on the admin URL's server."""
        return database_url(self.admin_url, name)

    def counters(self, pids: Sequence[int]) -> dict[str, float]:
        """The counters of these processes so far, added up."""
        total = dict.fromkeys(pgcount.FIELDS, 0.0)
        for pid in pids:
            for k, v in pgcount.read(self.counts / str(pid)).items():
                total[k] += v
        return total

    def snapshot(self, pids: Mapping[str, Sequence[int]]) -> dict[str, dict[str, float]]:
        """Each party's counters so far (``pids``: its processes), and the CPU seconds of each
        backend of its database (by pid: backends that ended in between are not counted)."""
        out = {party: self.counters(party_pids) for party, party_pids in pids.items()}
        names = ", ".join(f"'{n}'" for n in self.names.values())
        (rows,) = self._admin(f"SELECT pid FROM pg_stat_activity WHERE datname IN ({names})")
        out["backends"] = {str(pid): s for pid, s in backends_cpu_s(p for (p,) in rows).items()}
        return out

    @staticmethod
    def report(
        before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], n: int
    ) -> dict[str, float]:
        """Per PvP: statements and round trips of each party, the backends' CPU ms."""
        figures: dict[str, float] = {}
        parts = []
        for p in PARTIES:
            st = (after[p]["statements"] - before[p]["statements"]) / n
            rt = (after[p]["round_trips"] - before[p]["round_trips"]) / n
            tx = (after[p]["transactions"] - before[p]["transactions"]) / n
            figures |= {f"{p}_statements": st, f"{p}_round_trips": rt}
            parts.append(f"{p} {st:.1f} statements, {rt:.1f} round trips, {tx:.1f} transactions")
        cpu = (
            sum(v - before["backends"].get(pid, 0.0) for pid, v in after["backends"].items())
            * 1000
            / n
        )
        figures["backends_cpu_ms"] = cpu
        print("  PostgreSQL per PvP: " + "; ".join(parts) + f"; backends' CPU {cpu:.1f} ms")
        return figures


def _run(url: str, *statements: str) -> list[list[Any]]:
    """Run ``statements`` on the database at ``url``, outside any transaction; their rows."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            results = [conn.exec_driver_sql(s) for s in statements]
            return [list(r.all()) if r.returns_rows else [] for r in results]
    finally:
        engine.dispose()
