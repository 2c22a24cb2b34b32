"""Public, unauthenticated routes."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import State

from gateway import __version__
from gateway.api.schemas import HealthOut
from gateway.db import schema_revisions


class HealthController(Controller):
    path = "/health"
    tags = ["public"]

    @get("/", sync_to_thread=True, summary="Liveness and database reachability")
    def health(self, state: State) -> Response[HealthOut]:
        try:
            current, head = schema_revisions(state.engine)
        except Exception as exc:  # the database is down: report, do not crash
            body = HealthOut("degraded", f"unreachable: {type(exc).__name__}", None, __version__)
            return Response(body, status_code=503)
        ok = current == head
        body = HealthOut(
            "ok" if ok else "degraded", "ok" if ok else "schema out of date", current, __version__
        )
        return Response(body, status_code=200 if ok else 503)


ROUTES = [HealthController]

__all__ = ["ROUTES"]
