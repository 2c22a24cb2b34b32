"""Helpers for the webhook endpoint tests: a gateway over real HTTP whose receivers may run on
127.0.0.1 (``webhooks.allow_loopback``), one key per exchange, and the outbox sender the
scheduled job runs, driven by the test until a positive signal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.config import Settings, load_settings
from gateway.db import utcnow
from gateway.messaging.outbox import OutboxDispatcher, outbox_t
from gateway.messaging.serving import free_port, serve_in_thread
from gateway.stablecoin import endpoints_service, webhooks
from gateway.stablecoin.endpoints_store import WebhookUnitOfWork
from tests.support.stablecoin import EXCHANGE, OTHER_EXCHANGE, Receiver
from tests.support.waiting import wait_for


def settings_for(engine: Engine, tmp: Path, port: int, **sections: Any) -> Settings:
    webhook_settings = {"allow_loopback": True, **sections.pop("webhooks", {})}
    return load_settings(
        environ={},
        data_dir=str(tmp),
        database={"url": engine.url.render_as_string(hide_password=False)},
        http={"port": port, "public_url": f"http://127.0.0.1:{port}"},
        webhooks=webhook_settings,
        **sections,
    )


@dataclass
class HookGateway:
    url: str
    port: int
    engine: Engine
    settings: Settings
    tokens: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str = EXCHANGE) -> httpx.Client:
        if who not in self.clients:
            headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}
            self.clients[who] = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self.clients[who]

    def register(self, who: str, url: str) -> dict[str, Any]:
        r = self.client(who).post("/v1/webhooks/endpoints", json={"url": url})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def events(self, who: str, **params: Any) -> list[dict[str, Any]]:
        r = self.client(who).get("/v1/events", params={"limit": 500, **params})
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events

    def uow(self) -> endpoints_service.UowFactory:
        return lambda **kw: WebhookUnitOfWork(self.engine, **kw)

    def dispatcher(self) -> OutboxDispatcher:
        """The outbox dispatcher with the webhook sender, as ``dt-gateway serve`` wires it."""
        sender = webhooks.WebhookSender(self.engine, endpoints_service.policy_of(self.settings))
        return OutboxDispatcher(self.engine, {webhooks.TOPIC: sender})


def make_tokens(engine: Engine) -> dict[str, str]:
    return {
        EXCHANGE: auth.create_key(engine, "exchange", subject=EXCHANGE).token,
        OTHER_EXCHANGE: auth.create_key(engine, "exchange", subject=OTHER_EXCHANGE).token,
        "operator": auth.create_key(engine, "operator").token,
        "no-subject": auth.create_key(engine, "exchange").token,
    }


@contextmanager
def hook_gateway(
    engine: Engine,
    tmp: Path,
    tokens: dict[str, str] | None = None,
    **sections: Any,
) -> Iterator[HookGateway]:
    """The gateway app on a port it knows as its own (``http.port``, ``http.public_url``)."""
    port = free_port()
    settings = settings_for(engine, tmp, port, **sections)
    tokens = tokens if tokens is not None else make_tokens(engine)
    with serve_in_thread(create_app(settings, engine), port=port) as url:
        gw = HookGateway(url, port, engine, settings, tokens)
        try:
            yield gw
        finally:
            for c in gw.clients.values():
                c.close()


def publish(engine: Engine, exchange: str, event_type: str, data: dict[str, Any]) -> str:
    """Record one event of ``exchange`` the way the stablecoin services do (same function, in
    a transaction of its own); returns its id."""
    event_id = f"{exchange}-{event_type}-{time.monotonic_ns()}"
    uow = WebhookUnitOfWork(engine)
    with uow:
        webhooks.enqueue(
            uow.outbox,
            exchange=exchange,
            event_id=event_id,
            event_type=event_type,
            data=data,
            now=utcnow(),
        )
        uow.commit()
    return event_id


def unsent_deliveries(engine: Engine) -> int:
    q = (
        sa.select(sa.func.count())
        .select_from(outbox_t)
        .where(outbox_t.c.topic == webhooks.TOPIC, outbox_t.c.sent_at.is_(None))
    )
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def pump(dispatcher: OutboxDispatcher, until: Callable[[], Any], timeout: float = 20) -> Any:
    """Run the dispatcher until ``until()`` holds (a positive signal), as the job does."""

    def ran() -> Any:
        dispatcher.run_once()
        return until()

    return wait_for(ran, "the awaited deliveries", timeout=timeout, interval=0.02)


@dataclass(frozen=True)
class Delivery:
    event_id_header: str
    signature: str
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


def deliveries(receiver: Receiver) -> list[Delivery]:
    found = []
    for headers, body in list(receiver.deliveries):
        lower = {k.lower(): v for k, v in headers.items()}
        found.append(Delivery(lower["x-dt-event-id"], lower["x-dt-signature"], body))
    return found


def signed_by(secret: str, d: Delivery) -> bool:
    return webhooks.verify(secret.encode(), d.signature, d.body)
