"""Request-scoped dependencies: the authenticated principal and the units of work."""

from __future__ import annotations

import hashlib
import time
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from sqlalchemy.engine import Engine

from gateway.auth import Principal, Role, authenticate, require_role

_CACHE_SECONDS = 5.0


class KeyCache:
    """Remembers verified keys briefly, so a busy client costs one lookup every few seconds.

    A revoked key stops working within ``_CACHE_SECONDS``.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Principal]] = {}

    def principal(self, token: str | None) -> Principal:
        digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = authenticate(self.engine, token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


_PRINCIPAL = "dtg.principal"


class RoleGuard:
    """A dependency that authenticates the request and requires one of ``roles``.

    The app's first guard (:func:`gateway.api.edge.authenticate_first`) runs it before anything
    reads the request's parameters or body, so a request without a valid key is answered 401
    (and one with the wrong role 403) before its input is validated; the principal it found
    is kept in the request's scope, and the handler's dependency takes it from there.
    """

    def __init__(self, *roles: Role) -> None:
        self.roles = roles

    def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        scope = cast("dict[str, Any]", connection.scope)
        principal: Principal | None = scope.get(_PRINCIPAL)
        if principal is None:
            cache: KeyCache = connection.app.state.api_keys
            principal = cache.principal(bearer_token(connection))
        require_role(principal, *self.roles)
        scope[_PRINCIPAL] = principal
        return principal

    def __call__(self, request: Request[Any, Any, Any]) -> Principal:
        return self.authenticate(request)


def role_guard(*roles: Role) -> RoleGuard:
    """A dependency that authenticates the request and requires one of ``roles``."""
    return RoleGuard(*roles)


__all__ = ["KeyCache", "RoleGuard", "bearer_token", "role_guard"]
