"""Database leases: several gateway replicas share one database, and a scheduled job holding
the lease named after it runs on one replica at a time. A holder that dies loses the lease when
it expires, and another replica takes over."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from gateway.db import table_of, utc_field, utcnow


class LeaseRow(SQLModel, table=True):
    __tablename__ = "job_lease"
    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=64)
    expires_at: datetime = utc_field()


lease_t = table_of(LeaseRow)


def acquire(
    engine: Engine, name: str, holder: str, ttl: timedelta, *, now: datetime | None = None
) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until ``now`` (default: the clock's)
    + ``ttl``; False when another holder has it."""
    now = utcnow() if now is None else now
    with engine.begin() as conn:
        renewed = conn.execute(
            lease_t.update()
            .where(
                lease_t.c.name == name,
                sa.or_(lease_t.c.holder == holder, lease_t.c.expires_at <= now),
            )
            .values(holder=holder, expires_at=now + ttl)
        )
        if renewed.rowcount == 1:
            return True
    try:
        with engine.begin() as conn:
            conn.execute(
                lease_t.insert(), {"name": name, "holder": holder, "expires_at": now + ttl}
            )
        return True
    except IntegrityError:
        return False  # a live lease of another holder exists


def release(engine: Engine, name: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(lease_t.delete().where(lease_t.c.name == name, lease_t.c.holder == holder))


__all__ = ["LeaseRow", "acquire", "release"]
