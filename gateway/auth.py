"""API keys: created by ``dt-gateway keys create --role ROLE``, stored as SHA-256 hashes.

A key reads ``dtg_<key id>_<secret>``. The secret is 32 random bytes, so a plain SHA-256 is
enough (no password stretching needed) and lookups by key id stay O(1). The secret is shown once,
at creation; only its hash is stored.

A key works until it is revoked or its expiry passes (``expires_at``, optional). Rotating a
key makes a new one with the same role, subject and label and lets the old one expire after a
grace period, so its holder can switch without an outage (``dt-gateway keys rotate``).
``last_used_at`` is written by each replica at most once a minute per key
(:class:`gateway.api.deps.KeyCache`), never once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from gateway.db import table_of, utc_field, utcnow
from gateway.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from gateway.sqlite.walsync import NO_SYNC

PREFIX = "dtg"


class Role(StrEnum):
    OPERATOR = "operator"
    PARTICIPANT = "participant"
    EXCHANGE = "exchange"


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_key"
    id: str = Field(primary_key=True, max_length=32)
    secret_sha256: str = Field(max_length=64)
    role: str = Field(max_length=16)
    label: str = Field(default="", max_length=200)
    subject: str = Field(default="", max_length=128)
    """What the key acts for: a participant's BIC or wallet, the exchange's id."""
    created_at: datetime = utc_field()
    revoked_at: datetime | None = utc_field(nullable=True)
    expires_at: datetime | None = utc_field(nullable=True)
    """The key stops working at this time (None: when revoked)."""
    last_used_at: datetime | None = utc_field(nullable=True)
    """When a request last used it, to the minute (see the module docstring)."""
    replaces: str | None = Field(default=None, max_length=32)
    """The key this one was made to replace by a rotation."""


api_key_t = table_of(ApiKeyRow)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: Role
    subject: str
    label: str
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as ``dt-gateway keys list`` shows it: never its secret or hash."""

    key_id: str
    role: str
    subject: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    replaces: str | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    principal: Principal
    token: str
    """The whole key, to hand to its holder. Not stored, not shown again."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    engine: Engine,
    role: Role | str,
    *,
    label: str = "",
    subject: str = "",
    expires_at: datetime | None = None,
) -> CreatedKey:
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(f"role must be one of {', '.join(r.value for r in Role)}") from None
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("the expiry must be in the future")
    with engine.begin() as conn:
        return _insert_key(conn, role, label, subject, expires_at, None, now)


def _insert_key(
    conn: sa.Connection,
    role: Role,
    label: str,
    subject: str,
    expires_at: datetime | None,
    replaces: str | None,
    now: datetime,
) -> CreatedKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    conn.execute(
        api_key_t.insert(),
        {
            "id": key_id,
            "secret_sha256": _hash(secret),
            "role": role.value,
            "label": label,
            "subject": subject,
            "created_at": now,
            "expires_at": expires_at,
            "replaces": replaces,
        },
    )
    principal = Principal(key_id, role, subject, label, expires_at)
    return CreatedKey(principal=principal, token=f"{PREFIX}_{key_id}_{secret}")


def _active(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        api_key_t.c.revoked_at.is_(None),
        sa.or_(api_key_t.c.expires_at.is_(None), api_key_t.c.expires_at > now),
    )


def revoke_key(engine: Engine, key_id: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        done = conn.execute(
            api_key_t.update().where(api_key_t.c.id == key_id, _active(now)).values(revoked_at=now)
        )
    if done.rowcount == 0:
        raise NotFound(f"no active key {key_id}")


def rotate_key(
    engine: Engine,
    key_id: str,
    *,
    grace: timedelta,
    expires_at: datetime | None = None,
) -> tuple[CreatedKey, datetime]:
    """A new key with the old one's role, subject and label; the old one keeps working for
    ``grace`` more (revoked at once with no grace), never past its own expiry. ``expires_at``:
    the new key's expiry (default: none). Returns the new key and when the old one stops."""
    if grace < timedelta(0):
        raise InvalidInput("the grace period cannot be negative")
    now = utcnow()
    with engine.begin() as conn:
        old = conn.execute(
            api_key_t.select().where(api_key_t.c.id == key_id, _active(now)).with_for_update()
        ).first()
        if old is None:
            raise NotFound(f"no active key {key_id}")
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("the expiry must be in the future")
        created = _insert_key(conn, Role(old.role), old.label, old.subject, expires_at, old.id, now)
        until = now + grace
        if old.expires_at is not None and old.expires_at < until:
            until = old.expires_at
        change = {"revoked_at": now} if grace == timedelta(0) else {"expires_at": until}
        conn.execute(api_key_t.update().where(api_key_t.c.id == key_id).values(**change))
    return created, until


def list_keys(engine: Engine, *, everything: bool = False) -> list[KeyInfo]:
    """The keys, oldest first: the active ones, or ``everything`` (revoked and expired too)."""
    q = sa.select(
        api_key_t.c.id,
        api_key_t.c.role,
        api_key_t.c.subject,
        api_key_t.c.label,
        api_key_t.c.created_at,
        api_key_t.c.expires_at,
        api_key_t.c.revoked_at,
        api_key_t.c.last_used_at,
        api_key_t.c.replaces,
    ).order_by(api_key_t.c.created_at, api_key_t.c.id)
    if not everything:
        q = q.where(_active(utcnow()))
    with engine.connect() as conn:
        return [KeyInfo(*row) for row in conn.execute(q)]


def record_use(engine: Engine, used: Mapping[str, datetime]) -> None:
    """Write each key's ``last_used_at`` (never moving it back). Bookkeeping: on SQLite its
    commit does not wait for the log's fsync (a crash may lose the last minute of it)."""
    if not used:
        return
    with engine.connect() as conn, conn.execution_options(**{NO_SYNC: True}).begin():
        for key_id, at in sorted(used.items()):
            conn.execute(
                api_key_t.update()
                .where(
                    api_key_t.c.id == key_id,
                    sa.or_(api_key_t.c.last_used_at.is_(None), api_key_t.c.last_used_at < at),
                )
                .values(last_used_at=at)
            )


def authenticate(engine: Engine, token: str | None) -> Principal:
    """The principal behind a bearer token, or :class:`Unauthorized` (same error for every
    failure, so a caller cannot probe which key ids exist)."""
    if not token:
        raise Unauthorized("an API key is required: Authorization: Bearer dtg_...")
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthorized("invalid API key")
    _, key_id, secret = parts
    with engine.connect() as conn:
        row = conn.execute(api_key_t.select().where(api_key_t.c.id == key_id)).first()
    if (
        row is None
        or row.revoked_at is not None
        or not hmac.compare_digest(row.secret_sha256, _hash(secret))
    ):
        raise Unauthorized("invalid API key")
    principal = Principal(row.id, Role(row.role), row.subject, row.label, row.expires_at)
    if principal.expired(utcnow()):
        raise Unauthorized("invalid API key")
    return principal


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Forbidden(
            f"this needs a key with role {' or '.join(r.value for r in roles)}, "
            f"not {principal.role.value}"
        )


__all__ = [
    "ApiKeyRow",
    "CreatedKey",
    "KeyInfo",
    "Principal",
    "Role",
    "authenticate",
    "create_key",
    "list_keys",
    "record_use",
    "require_role",
    "revoke_key",
    "rotate_key",
]
