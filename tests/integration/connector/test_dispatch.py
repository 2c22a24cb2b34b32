"""The dispatcher looks for due outbox rows when a commit queued some, not at every wake-up."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.connector import Connector, store
from gateway.connector.keys import generate_identity
from gateway.connector.store import now_ms
from gateway.fastsql import run
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


def test_deliveries_are_recorded_together_and_stay_in_flight_until_then(tmp_path: Path) -> None:
    connector = Connector(connector_settings(tmp_path))
    connector.start(threads=False)
    try:
        _key, cert = generate_identity("a DT network")
        network = {"bic": BIC, "currency": "KZT", "endpoint": "http://127.0.0.1:9"}
        connector.register_participant({**network, "certificate_pem": cert})
        connector.create_trade(Env.trade_body())
        due = {"now": now_ms(), "busy": [0], "limit": 10}
        with store.reader(connector.engine) as conn:
            rows = run(conn, store.SELECT_DUE_OUTBOX, due).all()
        assert len(rows) == 2
        connector._inflight.update(r.id for r in rows)  # handed to the lanes, which report:
        for row in rows:
            connector._done.put((row, "sent"))

        connector._finish_delivered()  # just delivered: not recorded yet...
        with store.reader(connector.engine) as conn:
            assert [r.id for r in run(conn, store.SELECT_DUE_OUTBOX, due)] == [r.id for r in rows]
        assert connector._inflight == {r.id for r in rows}  # ...so not handed out again
        assert connector._dispatch_due() == 0

        connector._finish_delivered(force=True)  # the next poll, or once 50 ms have passed
        with store.reader(connector.engine) as conn:
            assert run(conn, store.SELECT_DUE_OUTBOX, due).all() == []
        assert not connector._inflight
    finally:
        connector.stop()
