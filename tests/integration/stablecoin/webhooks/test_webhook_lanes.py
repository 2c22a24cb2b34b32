"""The outbox job delivers each destination on a lane of its own: while one exchange's
endpoint holds a delivery without answering, another exchange's events are delivered. Real
HTTP on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from gateway.jobs import Jobs
from gateway.stablecoin import endpoints_service, webhooks
from tests.integration.stablecoin.webhooks.support import (
    deliveries,
    hook_gateway,
    publish,
    unsent_deliveries,
)
from tests.support.stablecoin import EXCHANGE, OTHER_EXCHANGE, webhook_receiver
from tests.support.waiting import wait_for


@dataclass
class Holding:
    """A receiver that holds each delivery unanswered until released."""

    url: str
    release: threading.Event = field(default_factory=threading.Event)
    holding: threading.Event = field(default_factory=threading.Event)
    """Set while a delivery is held."""
    answered: list[bytes] = field(default_factory=list)


@contextmanager
def holding_receiver() -> Iterator[Holding]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.holding.set()
            receiver.release.wait(30)
            receiver.holding.clear()
            receiver.answered.append(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Holding(f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def test_a_slow_exchange_does_not_hold_up_another_exchanges_webhooks(
    engine: Engine, tmp_path: Path
) -> None:
    with (
        holding_receiver() as slow,
        webhook_receiver() as quick,
        hook_gateway(engine, tmp_path) as gw,
    ):
        gw.register(EXCHANGE, slow.url)
        gw.register(OTHER_EXCHANGE, quick.url)
        # The slow exchange's events come first: delivered one after the other, the other
        # exchange's would wait behind them.
        held = [publish(engine, EXCHANGE, "mint.minted", {"n": i}) for i in range(2)]
        other = publish(engine, OTHER_EXCHANGE, "mint.minted", {"n": 2})
        sender = webhooks.WebhookSender(
            engine, endpoints_service.policy_of(gw.settings), timeout=30
        )
        jobs = Jobs(gw.settings, engine, senders={webhooks.TOPIC: sender})
        try:
            assert jobs.dispatch_outbox() == 3  # the scheduled job's round: to the lanes
            assert slow.holding.wait(30)
            wait_for(
                lambda: deliveries(quick),
                "the other exchange's delivery",
                timeout=30,
                interval=0.05,
            )
            assert slow.holding.is_set() and slow.answered == []  # still held meanwhile
            assert [d.event_id_header for d in deliveries(quick)] == [other]

            slow.release.set()
            wait_for(
                lambda: unsent_deliveries(engine) == 0,
                "every delivery recorded",
                timeout=30,
                interval=0.05,
            )
            assert sorted(json.loads(body)["id"] for body in slow.answered) == sorted(held)
            assert [d.event_id_header for d in deliveries(quick)] == [other]
        finally:
            slow.release.set()
            jobs.stop()
            sender.close()
