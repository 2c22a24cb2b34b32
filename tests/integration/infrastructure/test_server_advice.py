"""What the gateway warns of, at start, about the PostgreSQL server it runs on."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.pgengine import postgres_engine, server_advice


@pytest.mark.postgres
def test_autovacuum_off_is_warned_of_and_on_is_not(pg_url: str) -> None:
    engine = postgres_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            setting = conn.exec_driver_sql(
                "SELECT setting FROM pg_settings WHERE name = 'autovacuum'"
            ).scalar_one()
        advice = server_advice(engine)
    finally:
        engine.dispose()
    if setting == "off":
        assert len(advice) == 1 and "autovacuum off" in advice[0], advice
    else:
        assert advice == []


def test_sqlite_has_no_server_to_advise_on(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    assert server_advice(engine) == []
    engine.dispose()
