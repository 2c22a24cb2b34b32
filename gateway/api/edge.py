"""What every request to the gateway must pass before a handler, or anything it depends on,
looks at it.

App-level guards, so that every route gets them, including routes added later (litestar
runs the app's guards first, before the guards of controllers and handlers, and before it
parses parameters or the body):

1. :func:`gateway.api.ratelimit.limit_address_first`: the client address's rate limit (429),
   before anything else, key guessing included.
2. :func:`authenticate_first`: a route that needs a key checks it first. A request without a
   valid key is answered 401 (a key with the wrong role 403) before its parameters or body are
   validated, so an anonymous caller learns nothing about a route's input rules.
3. :func:`gateway.api.ratelimit.limit_key`: the key's rate limit (429).
4. :func:`gateway.httpinput.refuse_unstorable_input`: input that no database column can hold
   (NUL characters, integers beyond 64 bits, bodies that are not JSON) is refused with a 4xx
   problem, the same on SQLite and PostgreSQL.

They run as one guard, :func:`edge`, on the event loop: litestar runs each synchronous guard in
its thread pool and hands each guard a copy of the handler, ~0.1 ms of CPU a guard on every
request, the ISO 20022 door's too, where none of the first three applies. Only a key not
cached, which the database must check, is looked up in the thread pool.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler

from gateway.api.deps import RoleGuard
from gateway.api.ratelimit import limit_address_first, limit_key
from gateway.httpinput import refuse_unstorable_input


@cache
def _role_guard(handler: HTTPRouteHandler) -> RoleGuard | None:
    """The key check of the handler's ``principal``-like dependency, if it takes one.

    Only a dependency the handler's own signature asks for counts: the OPTIONS handler litestar
    adds to every path inherits the controller's dependencies but needs no key."""
    wanted = handler.parsed_fn_signature.parameters
    for name, provide in handler.resolve_dependencies().items():
        if name in wanted and isinstance(provide.dependency, RoleGuard):
            return provide.dependency
    return None


def needs_key(handler: HTTPRouteHandler) -> bool:
    return _role_guard(handler) is not None


async def authenticate_first(connection: ASGIConnection[Any, Any, Any, Any], handler: Any) -> None:
    if not isinstance(handler, HTTPRouteHandler):
        return
    guard = _role_guard(handler)
    if guard is None:
        return
    if guard.authenticate_cached(connection) is None:
        # The key is not cached: the database checks it, off the event loop.
        await sync_to_thread(guard.authenticate, connection)


async def edge(connection: ASGIConnection[Any, Any, Any, Any], handler: Any) -> None:
    """The address's limit, the key, the key's limit, then the input."""
    limit_address_first(connection, handler)
    await authenticate_first(connection, handler)
    limit_key(connection, handler)
    await refuse_unstorable_input(connection, handler)


GUARDS = [edge]
"""The app's guards: :func:`edge`."""

__all__ = ["GUARDS", "authenticate_first", "edge", "needs_key"]
