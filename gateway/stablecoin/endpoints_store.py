"""Webhook endpoint and event tables and their repository. Tables never leave this module.

- ``webhook_endpoint``: one row per endpoint. ``(exchange, slot)`` is unique and a slot runs
  from 1 to the per-exchange maximum, so two concurrent registrations cannot both take the
  last place; ``(exchange, url)`` is unique, so a retried registration cannot make a twin.
- ``webhook_event``: every event, once, with its exact body; listed per exchange in ``seq``
  order and sent again from here on request.

Deliveries themselves are outbox rows (topic ``webhook.exchange``) whose ``headers`` name the
event and the endpoint; the sender signs each with the endpoint's secret as it is when sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from gateway.db import SqlUnitOfWork, autoincrement_field, table_of, utc_field
from gateway.messaging.outbox import OutboxRepository
from gateway.stablecoin.endpoints import Endpoint, Event, EventFilter


class WebhookEndpointRow(SQLModel, table=True):
    __tablename__ = "webhook_endpoint"
    __table_args__ = (
        sa.UniqueConstraint("exchange", "slot", name="uq_webhook_endpoint_slot"),
        sa.UniqueConstraint("exchange", "url", name="uq_webhook_endpoint_url"),
        sa.CheckConstraint("slot >= 1", name="ck_webhook_endpoint_slot_pos"),
    )
    id: str = Field(primary_key=True, max_length=32)
    exchange: str = Field(max_length=128)
    slot: int
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=200)
    secret: str = Field(max_length=128)
    created_at: datetime = utc_field()
    secret_rotated_at: datetime | None = utc_field(nullable=True)


class WebhookEventRow(SQLModel, table=True):
    __tablename__ = "webhook_event"
    __table_args__ = (
        sa.UniqueConstraint("id", name="uq_webhook_event_id"),
        sa.Index("ix_webhook_event_exchange", "exchange", "seq"),
        sa.Index("ix_webhook_event_exchange_type", "exchange", "type", "seq"),
    )
    seq: int | None = autoincrement_field()
    id: str = Field(max_length=64)
    exchange: str = Field(max_length=128)
    type: str = Field(max_length=64)
    created_at: datetime = utc_field()
    body: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


endpoint_t = table_of(WebhookEndpointRow)
event_t = table_of(WebhookEventRow)
_ENDPOINT_TARGETS = sa.select(endpoint_t.c.id, endpoint_t.c.url).where(
    endpoint_t.c.exchange == sa.bindparam("exchange")
)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row.id,
        exchange=row.exchange,
        url=row.url,
        description=row.description,
        slot=row.slot,
        created_at=row.created_at,
        secret_rotated_at=row.secret_rotated_at,
        secret=row.secret,
    )


def _event(row: Any) -> Event:
    return Event(
        seq=row.seq,
        id=row.id,
        exchange=row.exchange,
        type=row.type,
        created_at=row.created_at,
        body=row.body,
    )


class SqlWebhookRepository:
    """Endpoint and event reads and writes on one connection, in the caller's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # endpoints ------------------------------------------------------------------

    def endpoints(self, exchange: str) -> list[Endpoint]:
        q = endpoint_t.select().where(endpoint_t.c.exchange == exchange)
        return [_endpoint(r) for r in self.conn.execute(q.order_by(endpoint_t.c.created_at))]

    def targets(self, exchange: str) -> list[tuple[str, str]]:
        """(id, url) of every endpoint of ``exchange``: where its events go."""
        return [(r.id, r.url) for r in self.conn.execute(_ENDPOINT_TARGETS, {"exchange": exchange})]

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = self.conn.execute(endpoint_t.select().where(endpoint_t.c.id == endpoint_id)).first()
        return _endpoint(row) if row else None

    def endpoint_by_url(self, exchange: str, url: str) -> Endpoint | None:
        q = endpoint_t.select().where(endpoint_t.c.exchange == exchange, endpoint_t.c.url == url)
        row = self.conn.execute(q).first()
        return _endpoint(row) if row else None

    def add_endpoint(self, e: Endpoint) -> None:
        self.conn.execute(
            endpoint_t.insert(),
            {
                "id": e.id,
                "exchange": e.exchange,
                "slot": e.slot,
                "url": e.url,
                "description": e.description,
                "secret": e.secret,
                "created_at": e.created_at,
                "secret_rotated_at": e.secret_rotated_at,
            },
        )

    def update_secret(self, e: Endpoint) -> None:
        self.conn.execute(
            endpoint_t.update()
            .where(endpoint_t.c.id == e.id)
            .values(secret=e.secret, secret_rotated_at=e.secret_rotated_at)
        )

    def remove_endpoint(self, endpoint_id: str) -> None:
        self.conn.execute(endpoint_t.delete().where(endpoint_t.c.id == endpoint_id))

    # events ---------------------------------------------------------------------

    def add_event(
        self, event_id: str, exchange: str, event_type: str, created_at: datetime, body: bytes
    ) -> None:
        self.conn.execute(
            event_t.insert(),
            {
                "id": event_id,
                "exchange": exchange,
                "type": event_type,
                "created_at": created_at,
                "body": body,
            },
        )

    def event(self, event_id: str) -> Event | None:
        row = self.conn.execute(event_t.select().where(event_t.c.id == event_id)).first()
        return _event(row) if row else None

    def events(self, exchange: str, where: EventFilter, after_seq: int, limit: int) -> list[Event]:
        q = event_t.select().where(event_t.c.exchange == exchange, event_t.c.seq > after_seq)
        if where.type is not None:
            q = q.where(event_t.c.type == where.type)
        if where.created_after is not None:
            q = q.where(event_t.c.created_at >= where.created_after)
        if where.created_before is not None:
            q = q.where(event_t.c.created_at < where.created_before)
        q = q.order_by(event_t.c.seq).limit(limit)
        return [_event(r) for r in self.conn.execute(q)]


class WebhookUnitOfWork(SqlUnitOfWork):
    """A transaction over the endpoint and event tables and the outbox (deliveries)."""

    webhooks: SqlWebhookRepository
    outbox: OutboxRepository

    def _bind(self, conn: Connection) -> None:
        self.webhooks = SqlWebhookRepository(conn)
        self.outbox = OutboxRepository(conn)


__all__ = [
    "SqlWebhookRepository",
    "WebhookEndpointRow",
    "WebhookEventRow",
    "WebhookUnitOfWork",
]
