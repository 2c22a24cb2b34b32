"""The gateway's litestar application, assembled from the audience modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.engine import Engine

from gateway import __version__
from gateway.api import (
    exchange,
    explorer,
    health,
    openapi,
    operator,
    partner,
    public,
    ratelimit,
    webhooks,
)
from gateway.api.deps import KeyCache
from gateway.api.edge import GUARDS, needs_key
from gateway.api.observe import HttpStats, Observed
from gateway.api.problems import EXCEPTION_HANDLERS
from gateway.api.ratelimit import AddressLimiter, RateLimits
from gateway.api.strict import strict_json_body
from gateway.collateral.runtime import CollateralLog
from gateway.config import Settings
from gateway.db import make_engine
from gateway.ledger.group import GroupCommitter
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging import isodoor
from gateway.metrics import Exporter
from gateway.problemdoc import declare_problems
from gateway.pvp.runtime import PvPRuntime
from gateway.readiness import Readiness

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

OPENAPI = OpenAPIConfig(
    title="DT Gateway",
    version=__version__,
    description=(
        "Digital Tenge gateway: the DT ledger (operator), cross-border PvP (partners), "
        "the stablecoin (exchange) and proof of collateral (public). Errors are RFC 9457 "
        "problem documents with a stable `code`."
    ),
    path="/schema",
    # Served by the gateway itself, so that the explorer works without internet.
    render_plugins=explorer.render_plugins(),
    components=Components(
        security_schemes={
            "BearerKey": SecurityScheme(
                type="http",
                scheme="bearer",
                description="dtg_... key from `dt-gateway keys create`",
            )
        }
    ),
    security=[{"BearerKey": []}],
)


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    extra_routes: list[Any] | None = None,
    on_startup: list[Any] | None = None,
    on_shutdown: list[Any] | None = None,
    stablecoin: Stablecoin | None = None,
    pvp: PvPRuntime | None = None,
    collateral: CollateralLog | None = None,
) -> Litestar:
    """Build the app. The engine's schema must already be checked (``dt-gateway serve`` does).
    ``stablecoin``: the exchange routes' chain runtime (without it they answer 503).
    ``collateral``: the log the public routes serve (default: the stablecoin's).

    With ``metrics.port`` set, the app serves its metrics there while it runs
    (``app.state.metrics``, a :class:`gateway.metrics.Exporter`)."""
    engine = engine or make_engine(settings.database)
    # The PvP engine (inbox workers, outbox dispatchers) lives and dies with the app.
    pvp = pvp or PvPRuntime(settings, engine)
    # Single ledger operations from concurrent requests share transactions (group commit).
    committer = GroupCommitter(lambda: LedgerUnitOfWork(engine))
    collateral = collateral or (stablecoin.collateral if stablecoin else None)
    keys = KeyCache(engine, settings.keys)
    http_stats = HttpStats()
    readiness = Readiness(settings, engine, stablecoin=stablecoin, collateral=collateral)
    exporter = Exporter(
        settings.metrics, engine, http_stats, stablecoin=stablecoin, collateral=collateral
    )
    state = State(
        {
            "settings": settings,
            "engine": engine,
            "api_keys": keys,
            "ledger_committer": committer,
            "stablecoin": stablecoin,
            "collateral": collateral,
            "pvp": pvp,
            "public_limiter": AddressLimiter(
                settings.collateral.rate_per_second, settings.collateral.rate_burst
            ),
            "rate_limits": RateLimits(settings.ratelimit),
            "readiness": readiness,
            "metrics": exporter,
        }
    )
    app = Litestar(
        route_handlers=[
            *public.ROUTES,
            *operator.ROUTES,
            *exchange.ROUTES,
            *webhooks.ROUTES,
            *partner.ROUTES,
            *explorer.ROUTES,
            *(extra_routes or []),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        guards=GUARDS,  # every route: the key first, then input no database can store
        openapi_config=OPENAPI,
        state=state,
        on_startup=[pvp.start, exporter.start, *(on_startup or [])],
        on_shutdown=[
            *(on_shutdown or []),
            pvp.stop,
            committer.stop,
            keys.close,
            readiness.close,
            exporter.stop,
        ],
        request_max_body_size=settings.iso20022.max_message_bytes * 2,
        before_request=strict_json_body,
        debug=False,
        # Logging is the process's business (the CLI configures it), not the app's.
        logging_config=None,
    )
    isodoor.document(app)  # ASGI handlers: litestar leaves them out of the schema
    public.document(app)
    declare_problems(app, needs_key, refusals=openapi.refusals)
    ratelimit.document(app, isodoor.PATH)  # the 429 of every route the limits apply to
    health.document(app)
    openapi.complete(app)  # examples, webhooks
    # Outermost: every request is timed and given its id, refusals and unknown paths too.
    app.asgi_handler = Observed(app.asgi_handler, http_stats)
    return app


__all__ = ["create_app"]
