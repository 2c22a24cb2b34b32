"""Fixtures shared by every test layer: real databases, created fresh for each run."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.support.anvil import require_anvil
from tests.support.browser import chromium
from tests.support.databases import PgDatabases, migrated_engine

if TYPE_CHECKING:
    from gateway.stablecoin.devchain import DevChain

PG_ADMIN_URL = os.environ.get(
    "DT_GATEWAY_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules with a ``slow`` test first, the others after them by their number of tests,
    most first. ``ops/test`` hands modules to its two workers in this order
    (``--no-loadscope-reorder``): by number of tests alone, as pytest-xdist orders them, the
    longest tests (a module of one property test or chaos run, a minute each) started last and
    kept one worker busy after the other had finished."""
    counts: dict[str, int] = {}
    slow: set[str] = set()
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        counts[module] = counts.get(module, 0) + 1
        if item.get_closest_marker("slow"):
            slow.add(module)

    def order(item: pytest.Item) -> tuple[bool, int, str]:
        module = item.nodeid.split("::", 1)[0]
        return module not in slow, -counts[module], module

    items.sort(key=order)  # stable: each module's tests keep their order


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_database_factory() -> Iterator[PgDatabases]:
    """Creates fresh PostgreSQL databases (dropped at the end of the session); returns URLs.
    ``migrated=True``: with the gateway's schema at the newest migration, copied from a
    template migrated once per session (``CREATE DATABASE ... TEMPLATE``: ~0.15 s, where
    running the migrations takes ~0.45 s, for each of several hundred databases).

    PostgreSQL is part of every machine this project runs on: in CI its absence is a failure.
    """
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []
    template: list[str] = []

    def url_of(name: str) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def new(template_name: str | None = None) -> str:
        name = f"dtg_test_{os.getpid()}_{secrets.token_hex(4)}"
        copied = f' TEMPLATE "{template_name}"' if template_name else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copied}')
        created.append(name)
        return name

    def create(*, migrated: bool = False) -> str:
        if not migrated:
            return url_of(new())
        if not template:
            name = new()
            migrated_engine(url_of(name)).dispose()  # no connection left: a template's rule
            template.append(name)
        return url_of(new(template[0]))

    yield create

    def drop(name: str) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # Several at once: each drop waits mostly on the server's disk, and a session makes
    # hundreds (one after the other, they took ~20 s at the end of the suite).
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(drop, created))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def pg_url(pg_database_factory: PgDatabases) -> str:
    return pg_database_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated engine on a fresh SQLite file, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")(migrated=True)
    eng = migrated_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def anvil() -> Iterator[DevChain]:
    """One anvil for the session; each test deploys its own contract on it."""
    from gateway.stablecoin.devchain import start_anvil

    require_anvil()
    chain = start_anvil(accounts=12)
    yield chain
    chain.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, one per test module (``tests/support/browser.py``)."""
    with chromium() as launched:
        yield launched
