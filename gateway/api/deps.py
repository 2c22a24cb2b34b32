"""Request-scoped dependencies: the authenticated principal and the units of work."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from sqlalchemy.engine import Engine

from gateway.auth import Principal, Role, authenticate, record_use, require_role
from gateway.config_ops import KeySettings
from gateway.db import utcnow
from gateway.errors import Unauthorized
from gateway.threads import start_thread

log = logging.getLogger(__name__)


class KeyCache:
    """Remembers verified keys briefly (``keys.cache_seconds``, at most a second), so a busy
    client costs a lookup or two a second per replica, and a revoked key stops working on every
    replica within that time. An expiry is checked on every request, cached or not.

    Each key's use is noted in memory and written (``last_used_at``) by a thread of its own at
    most every ``keys.last_used_every_seconds`` per key: a request never waits for that write.
    """

    def __init__(self, engine: Engine, settings: KeySettings | None = None) -> None:
        settings = settings or KeySettings()
        self.engine = engine
        self.ttl = settings.cache_seconds
        self.used_every = settings.last_used_every_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._noted: dict[str, float] = {}  # key id -> when its use was last queued
        self._used: dict[str, datetime] = {}  # key id -> time of use, not written yet
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False

    def principal(self, token: str | None) -> Principal:
        """The principal ``token`` is the key of (raises :class:`Unauthorized`)."""
        principal = self._principal(token, lookup=True)
        assert principal is not None
        return principal

    def cached(self, token: str | None) -> Principal | None:
        """:meth:`principal`, or None where that would look the key up in the database."""
        return self._principal(token, lookup=False)

    def _principal(self, token: str | None, *, lookup: bool) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            principal = hit[1]
            if principal.expires_at is not None and principal.expired(utcnow()):
                raise Unauthorized("invalid API key")
        elif not lookup:
            return None
        else:
            principal = authenticate(self.engine, token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self.ttl, principal)
        if now - self._noted.get(principal.key_id, -self.used_every) >= self.used_every:
            self._note_use(principal.key_id, now)
        return principal

    def _note_use(self, key_id: str, now: float) -> None:
        with self._lock:
            if now - self._noted.get(key_id, -self.used_every) < self.used_every:
                return
            self._noted[key_id] = now
            self._used[key_id] = utcnow()
            if self._writer is None and not self._closed:
                self._writer = start_thread(self._write_uses, "key-last-used")
        self._wake.set()

    def _write_uses(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.flush()
            if self._closed:
                return

    def flush(self) -> None:
        """Write the uses noted so far (the writing thread does this by itself)."""
        with self._lock:
            used, self._used = self._used, {}
        try:
            record_use(self.engine, used)
        except Exception:  # a busy or unreachable database: keep them for the next round
            log.warning("could not record the last use of %d API key(s)", len(used), exc_info=True)
            with self._lock:
                for key_id, at in used.items():
                    self._used.setdefault(key_id, at)

    def close(self) -> None:
        """Write what is noted and stop the writing thread (at the app's shutdown)."""
        self._closed = True
        self._wake.set()
        writer = self._writer
        if writer is not None:
            writer.join(timeout=5)
        self.flush()


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


_PRINCIPAL = "dtg.principal"


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal a request's key was verified as, once the first guard has run."""
    scope = cast("dict[str, Any]", connection.scope)
    found: Principal | None = scope.get(_PRINCIPAL)
    return found


class RoleGuard:
    """A dependency that authenticates the request and requires one of ``roles``.

    The app's guard (:func:`gateway.api.edge.edge`, its key check
    :func:`~gateway.api.edge.authenticate_first`) runs it before anything reads the
    request's parameters or body, so a request without a valid key is answered 401
    (and one with the wrong role 403) before its input is validated; the principal it found
    is kept in the request's scope, and the handler's dependency takes it from there.
    """

    def __init__(self, *roles: Role) -> None:
        self.roles = roles

    def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        principal = self._authenticate(connection, lookup=True)
        assert principal is not None
        return principal

    def authenticate_cached(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> Principal | None:
        """:meth:`authenticate`, or None where the key must be looked up in the database."""
        return self._authenticate(connection, lookup=False)

    def _authenticate(
        self, connection: ASGIConnection[Any, Any, Any, Any], *, lookup: bool
    ) -> Principal | None:
        scope = cast("dict[str, Any]", connection.scope)
        principal: Principal | None = scope.get(_PRINCIPAL)
        if principal is None:
            cache: KeyCache = connection.app.state.api_keys
            token = bearer_token(connection)
            principal = cache.principal(token) if lookup else cache.cached(token)
            if principal is None:
                return None
        require_role(principal, *self.roles)
        scope[_PRINCIPAL] = principal
        return principal

    def __call__(self, request: Request[Any, Any, Any]) -> Principal:
        return self.authenticate(request)


def role_guard(*roles: Role) -> RoleGuard:
    """A dependency that authenticates the request and requires one of ``roles``."""
    return RoleGuard(*roles)


__all__ = ["KeyCache", "RoleGuard", "bearer_token", "principal_of", "role_guard"]
