"""Request-scoped dependencies: the authenticated principal and the units of work."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.datastructures import State
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


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def role_guard(*roles: Role) -> Callable[[Request[Any, Any, Any], State], Principal]:
    """A dependency that authenticates the request and requires one of ``roles``."""

    def dependency(request: Request[Any, Any, Any], state: State) -> Principal:
        cache: KeyCache = state.api_keys
        principal = cache.principal(bearer_token(request))
        require_role(principal, *roles)
        return principal

    return dependency


__all__ = ["KeyCache", "bearer_token", "role_guard"]
