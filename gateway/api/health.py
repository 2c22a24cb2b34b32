"""Public probes: ``/health`` (the process answers) and ``/ready`` (it can do its work).

A load balancer or an orchestrator restarts a replica whose ``/health`` fails and sends no
traffic to one whose ``/ready`` fails (:mod:`gateway.readiness` says what it checks). Neither
needs a key, and neither is ever rate limited.
"""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Litestar, Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation, PathItem
from msgspec import Struct

from gateway import __version__
from gateway.api.ratelimit import UNLIMITED
from gateway.readiness import Readiness


class AliveOut(Struct, frozen=True):
    status: Literal["ok"]
    version: str


class CheckOut(Struct, frozen=True):
    ok: bool
    detail: str


class ReadyOut(Struct, frozen=True):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckOut]
    """By name: ``database`` always; ``chain``, ``connector`` and ``collateral_checkpoint``
    where they apply (docs/operations.md, "Health and readiness")."""
    version: str


_PROBE = {"rate_limit": UNLIMITED}


class HealthController(Controller):
    path = "/health"
    tags = ["public"]

    @get(
        "/",
        sync_to_thread=False,
        opt=_PROBE,
        summary="Liveness: the process answers (it checks no dependency; see /ready)",
    )
    def health(self) -> AliveOut:
        return AliveOut("ok", __version__)


class ReadyController(Controller):
    path = "/ready"
    tags = ["public"]

    @get(
        "/",
        sync_to_thread=True,
        opt=_PROBE,
        summary="Readiness: the database at the newest schema, the chain node, the connector "
        "and a fresh collateral checkpoint, as they apply",
        responses={
            503: ResponseSpec(
                ReadyOut, description="Not ready: the same body, with the checks that failed"
            )
        },
    )
    def ready(self, state: State) -> Response[ReadyOut]:
        readiness: Readiness = state.readiness
        verdict = readiness.verdict()
        body = ReadyOut(
            "ready" if verdict.ready else "not_ready",
            {name: CheckOut(c.ok, c.detail) for name, c in verdict.checks.items()},
            __version__,
        )
        return Response(body, status_code=200 if verdict.ready else 503)


def document(app: Litestar) -> None:
    """``/health`` answers 200 whenever the process runs: drop the generic 503 every other
    route declares (``/ready`` declares its own, with its body)."""
    item = (app.openapi_schema.paths or {}).get("/health")
    if isinstance(item, PathItem) and isinstance(item.get, Operation) and item.get.responses:
        item.get.responses.pop("503", None)


ROUTES: list[Any] = [HealthController, ReadyController]

__all__ = ["ROUTES", "AliveOut", "ReadyOut", "document"]
