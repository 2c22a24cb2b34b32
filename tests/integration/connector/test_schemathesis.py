"""Schemathesis against the connector mock over real HTTP, with its admin token and with a
participant's token, on SQLite and on PostgreSQL: no server error, and every answer as its
OpenAPI document declares it.

``POST /v1/faults`` is left out: its ``crash_after`` rules kill the process on purpose (and
here that is the test's own); its checks are in test_matching_and_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.connector.app import create_app
from gateway.connector.runtime import Connector
from gateway.messaging.serving import serve_in_thread
from tests.integration.connector.support import connector_settings
from tests.support.fuzz import report, run_schemathesis

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-for-schemathesis"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def connector(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A connector with an admin token and one registered participant: (url, role -> token)."""
    database: dict[str, str] = {}
    if request.param == "postgresql":
        factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        database["database_url"] = factory()
    settings = connector_settings(tmp_path, admin_token=ADMIN_TOKEN, **database)
    with serve_in_thread(create_app(Connector(settings))) as url:
        r = httpx.post(
            f"{url}/v1/participants",
            json={"bic": "HSBKKZKX", "currency": "KZT"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201, r.text
        yield url, {"admin": ADMIN_TOKEN, "participant": r.json()["token"]}


@pytest.mark.parametrize("role", ["admin", "participant"])
def test_every_answer_is_declared_and_none_is_a_server_error(
    connector: tuple[str, dict[str, str]], role: str, tmp_path: Path
) -> None:
    url, tokens = connector
    run = run_schemathesis(url, tokens[role], "--exclude-name", "POST /v1/faults", workdir=tmp_path)
    assert run.returncode == 0, report(run)
    assert httpx.get(f"{url}/v1/sim/AED/check").json()["ok"]
