"""The connector over real HTTP on 127.0.0.1, with a fake DT network on the other side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.connector.app import create_app
from gateway.connector.runtime import Connector
from gateway.messaging.serving import serve_in_thread
from tests.integration.connector.fakenet import FakeNetwork
from tests.integration.connector.support import Env, connector_settings, register_network


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """Start a connector (settings overridable) and a fake DT network registered with it."""
    stack = ExitStack()

    def make(**connector: Any) -> Env:
        settings = connector_settings(tmp_path, **connector)
        conn = Connector(settings)
        url = stack.enter_context(serve_in_thread(create_app(conn)))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        cert = http.get("/v1/certificate").json()["certificate_pem"]
        net = FakeNetwork(connector_url=url, connector_cert=cert)
        stack.callback(net.close)
        net.url = stack.enter_context(serve_in_thread(net.app()))
        register_network(http, net)
        return Env(url=url, http=http, connector=conn, dt=net)

    with stack:
        yield make


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


@pytest.fixture(autouse=True)
def _quiet_httpx() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
