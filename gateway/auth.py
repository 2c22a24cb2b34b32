"""API keys: created by ``dt-gateway keys create --role ROLE``, stored as SHA-256 hashes.

A key reads ``dtg_<key id>_<secret>``. The secret is 32 random bytes, so a plain SHA-256 is
enough (no password stretching needed) and lookups by key id stay O(1). The secret is shown once,
at creation; only its hash is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from gateway.db import table_of, utc_field, utcnow
from gateway.errors import Forbidden, InvalidInput, NotFound, Unauthorized

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


api_key_t = table_of(ApiKeyRow)


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: Role
    subject: str
    label: str


@dataclass(frozen=True, slots=True)
class CreatedKey:
    principal: Principal
    token: str
    """The whole key, to hand to its holder. Not stored, not shown again."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    engine: Engine, role: Role | str, *, label: str = "", subject: str = ""
) -> CreatedKey:
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(f"role must be one of {', '.join(r.value for r in Role)}") from None
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            api_key_t.insert(),
            {
                "id": key_id,
                "secret_sha256": _hash(secret),
                "role": role.value,
                "label": label,
                "subject": subject,
                "created_at": utcnow(),
            },
        )
    principal = Principal(key_id=key_id, role=role, subject=subject, label=label)
    return CreatedKey(principal=principal, token=f"{PREFIX}_{key_id}_{secret}")


def revoke_key(engine: Engine, key_id: str) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            api_key_t.update()
            .where(api_key_t.c.id == key_id, api_key_t.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    if done.rowcount == 0:
        raise NotFound(f"no active key {key_id}")


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
    return Principal(key_id=row.id, role=Role(row.role), subject=row.subject, label=row.label)


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Forbidden(
            f"this needs a key with role {' or '.join(r.value for r in roles)}, "
            f"not {principal.role.value}"
        )


__all__ = [
    "ApiKeyRow",
    "CreatedKey",
    "Principal",
    "Role",
    "authenticate",
    "create_key",
    "require_role",
    "revoke_key",
]
