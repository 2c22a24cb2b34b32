"""The dispatcher looks for due outbox rows when a commit queued some, not at every wake-up."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.connector import Connector
from gateway.connector.keys import generate_identity
from tests.integration.connector.conftest import Env, connector_settings
from tests.integration.connector.fakenet import BIC


def test_only_commits_that_queued_rows_send_the_dispatcher_looking(tmp_path: Path) -> None:
    connector = Connector(connector_settings(tmp_path))
    connector.start(threads=False)  # no dispatcher: the flag is left for us to read
    try:
        _key, cert = generate_identity("a DT network")
        network = {"bic": BIC, "currency": "KZT", "endpoint": "http://127.0.0.1:9"}
        connector.register_participant({**network, "certificate_pem": cert})
        connector._fresh = False
        connector._notify()  # a delivery finished, say: nothing new to look for
        assert not connector._fresh

        # A trade, committed on another thread (as the HTTP handlers do): its two pacs.009.
        body = Env.trade_body()
        worker = threading.Thread(target=connector.create_trade, args=(body,))
        worker.start()
        worker.join()
        assert connector._fresh

        connector._fresh = False
        assert connector._dispatch_due() == 2  # nothing in flight: still one prepared plan
        assert connector._inflight and connector._dispatch_due() == 0  # in flight: not again
        connector._notify()
        assert not connector._fresh
    finally:
        connector.stop()
