"""Databases for tests: a gateway engine on a URL, migrated to the code's schema. The root
``tests/conftest.py`` makes the fresh databases (fixtures ``engine``, ``sqlite_url``,
``pg_url``, ``pg_database_factory``); a test that needs an engine of its own (more
connections, a second one on the same database) builds it here."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from gateway.config import DatabaseSettings
from gateway.db import make_engine, upgrade


def migrated_engine(url: str, pool_size: int = 10) -> Engine:
    """The gateway's engine on ``url`` (``pool_size`` connections), its schema upgraded to
    the newest migration."""
    engine = make_engine(DatabaseSettings(url=url, pool_size=pool_size))
    upgrade(engine)
    return engine
