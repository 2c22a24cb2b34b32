"""Databases for tests: a gateway engine on a URL, migrated to the code's schema. The root
``tests/conftest.py`` makes the fresh databases (fixtures ``engine``, ``sqlite_url``,
``pg_url``, ``pg_database_factory``); a test that needs an engine of its own (more
connections, a second one on the same database) builds it here."""

from __future__ import annotations

from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import Engine

from gateway.config import DatabaseSettings
from gateway.db import make_engine, upgrade


class PgDatabases(Protocol):
    """The ``pg_database_factory`` fixture: a fresh database's URL, empty or (``migrated``)
    with the gateway's schema."""

    def __call__(self, *, migrated: bool = False) -> str: ...


def migrated_engine(url: str, pool_size: int = 10) -> Engine:
    """The gateway's engine on ``url`` (``pool_size`` connections), its schema upgraded to
    the newest migration."""
    engine = make_engine(DatabaseSettings(url=url, pool_size=pool_size))
    upgrade(engine)
    return engine


def plans_kept(url: str, sql: str, params: Any, runs: int = 12) -> tuple[int, int]:
    """Run ``sql`` prepared (as psycopg does from a statement's fifth use on a connection)
    ``runs`` times on a PostgreSQL connection of its own: how many runs the server planned
    anew (custom plans) and how many ran the plan it kept (generic)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(runs):
            cur = conn.execute(sql, params, prepare=True)
            if cur.description is not None:  # a write returns no rows
                cur.fetchall()
        row = conn.execute(
            "SELECT custom_plans, generic_plans FROM pg_prepared_statements", prepare=False
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
