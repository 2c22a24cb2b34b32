"""Public, unauthenticated routes: health and readiness (:mod:`gateway.api.health`), and the
proof-of-collateral log.

The log is served twice: as the C2SP ``tlog-tiles`` static layout under ``/collateral/log/``
(what transparency-log tooling and our verifier read), and as JSON conveniences under
``/v1/collateral/``. Both are limited per client address (``collateral.rate_*``).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Controller, Litestar, Response, asgi, get
from litestar.datastructures import State
from litestar.exceptions import MethodNotAllowedException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    PathItem,
    Schema,
)
from litestar.params import FromPath, Parameter
from litestar.types import HTTPScope, Receive, Send

from gateway.api import health
from gateway.api.collateral_page import CollateralPageController
from gateway.api.collateral_schemas import MovementsOut, StatementsOut
from gateway.api.ratelimit import check_address, limit_by_address
from gateway.collateral import service as collateral
from gateway.collateral import views as collateral_views
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.errors import Unavailable
from gateway.messaging import isodoor


class CollateralNotKept(Unavailable):
    code = "COLLATERAL_NOT_KEPT"
    title = "No collateral log"


def _log(state: State) -> tuple[collateral.UowFactory, CollateralLog]:
    clog: CollateralLog | None = state.get("collateral")
    if clog is None:
        raise CollateralNotKept("this gateway runs no stablecoin, so it keeps no collateral log")
    engine = state.engine

    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    return uow, clog


_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_PARTIAL = {"Cache-Control": "public, max-age=3600"}
_TEXT = "text/plain; charset=utf-8"
_OCTETS = "application/octet-stream"
_MAX_INDEX = 2**62
"""Indexes and sizes beyond this are refused before they reach the database."""

_Index = Parameter(ge=0, le=_MAX_INDEX)
_Size = Parameter(ge=1, le=_MAX_INDEX)
_TOO_MANY = ResponseSpec(None, description="Too many requests from this address")


CHECKPOINT_PATH = "/collateral/log/checkpoint"


@asgi(CHECKPOINT_PATH, copy_scope=False)
async def collateral_checkpoint(scope: HTTPScope, receive: Receive, send: Send) -> None:
    """``GET /collateral/log/checkpoint``: the newest signed checkpoint. The most polled route
    of the log (every verifier and witness asks for it), so a bare ASGI handler serving this
    replica's copy, read again at most every ``collateral.checkpoint_cache_seconds`` (see
    :mod:`gateway.messaging.isodoor` for what litestar's machinery would cost)."""
    if scope.get("method") not in ("GET", "HEAD"):
        raise MethodNotAllowedException(headers={"Allow": "GET"})
    state = scope["app"].state
    client = scope.get("client")
    check_address(state, client[0] if client else None)
    uow, clog = _log(state)
    if collateral.checkpoint_is_stale(clog):
        await anyio.to_thread.run_sync(lambda: collateral.checkpoint(uow, clog))
    cached = clog.checkpoint
    assert cached is not None
    await isodoor.answer(send, 200, _TEXT, cached[1].encode(), _CHECKPOINT_HEADERS)


_CHECKPOINT_HEADERS = ((b"cache-control", b"public, max-age=1"),)

CHECKPOINT_DOC = PathItem(
    get=Operation(
        tags=["public: proof of collateral"],
        summary="The newest signed checkpoint (C2SP tlog-checkpoint in a signed note)",
        description=(
            "Origin, tree size, base64 root hash and a `timestamp <unix seconds>` extension "
            "line, signed with the log's Ed25519 key (docs/collateral.md). Limited per client "
            "address (429 with Retry-After)."
        ),
        operation_id="CollateralCheckpoint",
        security=[],
        responses={
            "200": OpenAPIResponse(
                description="The signed note",
                content={_TEXT: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
            ),
            "429": OpenAPIResponse(description="Too many requests from this address"),
            "503": OpenAPIResponse(description="No log here, or no checkpoint signed yet"),
        },
    )
)


def document(app: Litestar) -> None:
    """Add the bare ASGI checkpoint route to ``app``'s OpenAPI document."""
    schema = app.openapi_schema
    schema.paths = {**(schema.paths or {}), CHECKPOINT_PATH: CHECKPOINT_DOC}


class CollateralLogController(Controller):
    """The C2SP tiled log: hash tiles and entry bundles (the checkpoint is
    :func:`collateral_checkpoint`)."""

    path = "/collateral/log"
    tags = ["public: proof of collateral"]
    guards = [limit_by_address]
    security: list[dict[str, list[str]]] = [{}]

    @get(
        "/tile/{rest:path}",
        sync_to_thread=True,
        media_type=_OCTETS,
        summary="A hash tile (tile/<L>/<N>[.p/<W>]) or an entry bundle (tile/entries/<N>[.p/<W>])",
    )
    def tile(self, state: State, rest: FromPath[str]) -> Response[bytes]:
        uow, clog = _log(state)
        data, full = collateral.tile(uow, clog, "tile" + rest)
        return Response(data, media_type=_OCTETS, headers=_IMMUTABLE if full else _PARTIAL)


class CollateralController(Controller):
    """JSON conveniences over the same log; every answer can be checked against the tiles."""

    path = "/v1/collateral"
    tags = ["public: proof of collateral"]
    guards = [limit_by_address]
    security: list[dict[str, list[str]]] = [{}]

    @get("/keys", sync_to_thread=False, summary="The log's verifier key (pin it; do not fetch it)")
    def keys(self, state: State) -> dict[str, Any]:
        _, clog = _log(state)
        return {"log": {"origin": clog.origin, "vkey": clog.vkey}}

    @get("/statement", sync_to_thread=True, summary="The newest reserve statement, with its proof")
    def statement(self, state: State) -> dict[str, Any]:
        uow, clog = _log(state)
        return collateral.latest_statement(uow, clog)

    @get(
        "/statements",
        sync_to_thread=True,
        summary="Reserve statements, newest first (reserve and supply over time)",
        responses={429: _TOO_MANY},
    )
    def statements(
        self,
        state: State,
        limit: int = Parameter(default=100, ge=1, le=collateral_views.MAX_STATEMENTS),
        before: int | None = Parameter(default=None, ge=0, le=_MAX_INDEX),
    ) -> StatementsOut:
        uow, clog = _log(state)
        return StatementsOut.of(collateral_views.statements(uow, clog, limit, before))

    @get(
        "/movements",
        sync_to_thread=True,
        summary="DT movements, mints and redemptions, newest first, with their chain txs",
        responses={429: _TOO_MANY},
    )
    def movements(
        self,
        state: State,
        limit: int = Parameter(default=20, ge=1, le=collateral_views.MAX_MOVEMENTS),
        before: int | None = Parameter(default=None, ge=0, le=_MAX_INDEX),
    ) -> MovementsOut:
        uow, clog = _log(state)
        return MovementsOut.of(collateral_views.movements(uow, clog, limit, before))

    @get("/entries/{index:int}", sync_to_thread=True, summary="An entry with its inclusion proof")
    def entry(
        self,
        state: State,
        index: int = _Index,
        size: int | None = Parameter(default=None, ge=1, le=_MAX_INDEX),
    ) -> dict[str, Any]:
        uow, clog = _log(state)
        return collateral.entry_with_proof(uow, clog, index, size)

    @get("/entries", sync_to_thread=True, summary="The entries of a DT transfer or a chain tx")
    def find(
        self,
        state: State,
        transfer_id: str | None = Parameter(default=None, max_length=128),
        tx_hash: str | None = Parameter(default=None, max_length=66),
    ) -> dict[str, Any]:
        uow, clog = _log(state)
        found = collateral.find_entries(uow, clog, transfer_id=transfer_id, tx_hash=tx_hash)
        return {"entries": found}

    @get("/consistency", sync_to_thread=True, summary="A consistency proof between two sizes")
    def consistency(
        self,
        state: State,
        first: int = _Size,
        second: int | None = Parameter(default=None, ge=1, le=_MAX_INDEX),
    ) -> dict[str, Any]:
        uow, clog = _log(state)
        return collateral.consistency(uow, clog, first, second)

    @get(
        "/proof/{index:int}",
        sync_to_thread=True,
        media_type=_TEXT,
        summary="A C2SP tlog-proof of one entry (the entry itself on its extra line)",
    )
    def proof(self, state: State, index: int = _Index) -> Response[str]:
        uow, clog = _log(state)
        return Response(collateral.proof_bundle(uow, clog, index), media_type=_TEXT)


ROUTES: list[Any] = [
    *health.ROUTES,
    collateral_checkpoint,
    CollateralLogController,
    CollateralController,
    CollateralPageController,
]

__all__ = ["ROUTES"]
