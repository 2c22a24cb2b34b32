from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.config import load_settings
from gateway.messaging.serving import serve_in_thread
from tests.integration.api.edge_support import edge, edge_chain  # noqa: F401 (fixtures)
from tests.support.http import Gateway


@pytest.fixture
def gateway(engine: Engine) -> Iterator[Gateway]:
    """The gateway over real HTTP (uvicorn on 127.0.0.1), on SQLite and on PostgreSQL."""
    settings = load_settings(environ={}, database={"url": str(engine.url)})
    token = auth.create_key(engine, "operator", label="tests").token
    with serve_in_thread(create_app(settings, engine)) as url:
        operator = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        anonymous = httpx.Client(base_url=url, timeout=10)
        try:
            yield Gateway(url, engine, operator, anonymous)
        finally:
            operator.close()
            anonymous.close()
