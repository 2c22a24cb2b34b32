"""A PvP's decision is final in the store itself: the ``decisions`` triggers refuse both UPDATE
and DELETE, on SQLite and on PostgreSQL, whatever the statement touches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.connector.support import Env

CHANGES = {
    "update_decision": "UPDATE decisions SET decision = 'ABORT'",
    "update_reason": "UPDATE decisions SET reason = 'TMOT'",
    "update_time": "UPDATE decisions SET decided_at = decided_at + 1",
    "update_nothing": "UPDATE decisions SET decision = decision",
    "delete_one": "DELETE FROM decisions WHERE pvp_id = :pvp_id",
    "delete_all": "DELETE FROM decisions",
}


def _rows(env: Env) -> list[tuple[Any, ...]]:
    with env.connector.engine.connect() as conn:
        result = conn.execute(sa.text("SELECT * FROM decisions ORDER BY pvp_id"))
        return [tuple(row) for row in result]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def decided(request: pytest.FixtureRequest, make_env: Callable[..., Env]) -> tuple[Env, str]:
    """A connector on each database with one PvP settled: its COMMIT decision is stored."""
    if request.param == "sqlite":
        env = make_env()
    else:
        env = make_env(database_url=request.getfixturevalue("pg_database_factory")())
    pvp_id = env.trade()
    view = env.wait(pvp_id, lambda v: v["state"] == "settled")
    assert view["decision"]["decision"] == "COMMIT"
    return env, pvp_id


def test_the_store_refuses_to_change_or_delete_a_decision(decided: tuple[Env, str]) -> None:
    env, pvp_id = decided
    before = _rows(env)
    assert [row[0] for row in before] == [pvp_id]
    for name, statement in CHANGES.items():
        with pytest.raises(sa.exc.DBAPIError) as refused, env.connector.engine.begin() as conn:
            conn.execute(sa.text(statement), {"pvp_id": pvp_id})
        assert "a PvP decision is final" in str(refused.value), name
        assert _rows(env) == before, name
    assert env.pvp(pvp_id)["decision"]["decision"] == "COMMIT"
