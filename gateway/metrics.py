"""Prometheus metrics of one gateway replica, served on a port of their own
(``metrics.port``; docs/operations.md, "Metrics").

Three sources, each as cheap as it can be where the work happens:

- read from the database when scraped (at most every ``metrics.database_refresh_seconds``),
  through indexes that already exist for the work lists: the outbox backlog and its oldest
  message per topic, the PvP inbox backlog, legs locked and legs awaiting an operator, mints
  and redemptions by state, the latest reconciliation, the collateral log (size, pool,
  checkpoint age), and who holds each job lease. These are the database's figures, the same
  from every replica. Legs are not counted by every state: that would read the whole leg table
  at each scrape (0.3 s a million legs on SQLite); finished legs are counted as they finish;
- counted by this process as it works (:mod:`gateway.telemetry`): legs finished and their
  latency, SQLite fsyncs and how many commits each covered;
- the HTTP edge (:class:`gateway.api.observe.HttpStats`): requests by route and status,
  latency by route.

The server has no authentication: bind it (``metrics.host``) where only the monitoring system
can reach it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy.engine import Connection, Engine

from gateway import __version__, telemetry
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config_ops import MetricsSettings
from gateway.db import utcnow
from gateway.leases import lease_t
from gateway.messaging.outbox import outbox_t
from gateway.pvp.store import inbox_t, leg_t
from gateway.stablecoin.store import mint_t, reconciliation_t, redemption_t

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

log = logging.getLogger(__name__)


class Collects(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - then).total_seconds())


_LOCKED = leg_t.c.state == sa.literal_column("'locked'")  # in the text: the partial index


class DatabaseGauges:
    """The figures read from the database (module docstring), cached between scrapes."""

    def __init__(
        self,
        engine: Engine,
        refresh_seconds: float,
        *,
        stablecoin: Stablecoin | None = None,
        collateral: CollateralLog | None = None,
    ) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self.stablecoin = stablecoin
        self.collateral = collateral
        self.replica: str | None = None
        """This replica's job-lease holder id, when it runs the jobs (``dt-gateway serve``)."""
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cached = self._cached
            if cached is None or time.monotonic() - cached[0] >= self.refresh_seconds:
                cached = self._cached = (time.monotonic(), self._read())
        yield from cached[1]

    def _read(self) -> list[Metric]:
        started = time.perf_counter()
        up = _gauge("dtg_metrics_database_up", "1 when the database answered the last read")
        took = _gauge("dtg_metrics_database_read_seconds", "How long the last read took")
        try:
            families = self._families()
        except Exception as exc:  # a scrape must not fail because the database does
            log.warning("metrics: the database could not be read: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        took.add_metric([], time.perf_counter() - started)
        return [up, took, *families]

    def _families(self) -> list[Metric]:
        now = utcnow()
        out: list[Metric] = []
        conn: Connection
        with self.engine.connect().execution_options(dt_readonly=True) as conn:
            out += self._outbox(conn, now)
            out += self._pvp(conn, now)
            out += self._leases(conn, now)
            if self.stablecoin is not None:
                out += self._stablecoin(conn, now, self.stablecoin.contract)
        if self.collateral is not None:
            out += self._collateral(self.collateral, now)
        return out

    def _outbox(self, conn: Connection, now: datetime) -> list[Metric]:
        backlog = _gauge(
            "dtg_outbox_backlog", "Messages and webhooks not yet delivered, by topic", ("topic",)
        )
        oldest = _gauge(
            "dtg_outbox_oldest_seconds",
            "Age of the oldest undelivered message, by topic",
            ("topic",),
        )
        rows = conn.execute(
            sa.select(outbox_t.c.topic, sa.func.count(), sa.func.min(outbox_t.c.created_at))
            .where(outbox_t.c.sent_at.is_(None))
            .group_by(outbox_t.c.topic)
        )
        for topic, n, first in rows:
            backlog.add_metric([topic], n)
            oldest.add_metric([topic], _age(now, first))
        return [backlog, oldest]

    def _pvp(self, conn: Connection, now: datetime) -> list[Metric]:
        n, first = conn.execute(
            sa.select(sa.func.count(), sa.func.min(inbox_t.c.received_at)).where(
                inbox_t.c.processed_at.is_(None)
            )
        ).one()
        inbox = _gauge("dtg_pvp_inbox_backlog", "Inbound PvP messages stored, not yet applied")
        inbox.add_metric([], n)
        inbox_age = _gauge(
            "dtg_pvp_inbox_oldest_seconds", "Age of the oldest inbound message not yet applied"
        )
        inbox_age.add_metric([], _age(now, first))
        locked, alerted = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(leg_t.c.alert_at),
            ).where(_LOCKED)
        ).one()
        legs = _gauge("dtg_pvp_legs_locked", "DT legs locked, waiting for the connector's decision")
        legs.add_metric([], locked)
        waiting = _gauge(
            "dtg_pvp_legs_awaiting_operator",
            "Locked legs past their last-resort deadline: an operator must decide (runbook)",
        )
        waiting.add_metric([], alerted)
        return [inbox, inbox_age, legs, waiting]

    def _leases(self, conn: Connection, now: datetime) -> list[Metric]:
        lease = _gauge(
            "dtg_job_lease",
            "1 for each live job lease, labelled with the replica holding it",
            ("job", "holder"),
        )
        held = _gauge("dtg_job_lease_held", "1 when this replica holds the job's lease", ("job",))
        for name, holder, expires in conn.execute(
            sa.select(lease_t.c.name, lease_t.c.holder, lease_t.c.expires_at)
        ):
            if expires > now:
                lease.add_metric([name, holder], 1)
                if self.replica is not None:
                    held.add_metric([name], 1 if holder == self.replica else 0)
        return [lease, held]

    def _stablecoin(self, conn: Connection, now: datetime, contract: str) -> list[Metric]:
        mints = _gauge("dtg_stablecoin_mints", "Mint requests by state", ("state",))
        for state, n in conn.execute(
            sa.select(mint_t.c.state, sa.func.count()).group_by(mint_t.c.state)
        ):
            mints.add_metric([state], n)
        redemptions = _gauge("dtg_stablecoin_redemptions", "Redemptions by state", ("state",))
        for state, n in conn.execute(
            sa.select(redemption_t.c.state, sa.func.count()).group_by(redemption_t.c.state)
        ):
            redemptions.add_metric([state], n)
        rec = reconciliation_t.c
        last = conn.execute(
            sa.select(rec.gap, rec.ok, rec.checked_at, rec.total_supply, rec.segregated_balance)
            .where(rec.contract_address == contract)
            .order_by(rec.seq.desc())
            .limit(1)
        ).first()
        gap = _gauge(
            "dtg_reconciliation_gap",
            "The latest reconciliation's gap between DT held and tokens owed, in tiyn (0 is "
            "balanced)",
        )
        ok = _gauge("dtg_reconciliation_ok", "1 when the latest reconciliation balanced")
        age = _gauge("dtg_reconciliation_age_seconds", "Time since the latest reconciliation")
        supply = _gauge("dtg_stablecoin_total_supply", "totalSupply at the latest reconciliation")
        held = _gauge(
            "dtg_segregated_balance", "The segregated DT wallet at the latest reconciliation"
        )
        if last is not None:
            gap.add_metric([], last.gap)
            ok.add_metric([], 1 if last.ok else 0)
            age.add_metric([], _age(now, last.checked_at))
            supply.add_metric([], last.total_supply)
            held.add_metric([], last.segregated_balance)
        return [mints, redemptions, gap, ok, age, supply, held]

    def _collateral(self, clog: CollateralLog, now: datetime) -> list[Metric]:
        with CollateralUnitOfWork(self.engine, readonly=True) as uow:
            size = uow.collateral.size(clog.wallet_id)
            pending = uow.collateral.pending_count(clog.wallet_id)
            checkpoint = uow.collateral.latest_checkpoint(clog.wallet_id)
        log_size = _gauge("dtg_collateral_log_size", "Entries in the collateral log")
        log_size.add_metric([], size)
        pool = _gauge("dtg_collateral_pending", "Entries pooled, not yet sequenced into the log")
        pool.add_metric([], pending)
        cp_size = _gauge("dtg_collateral_checkpoint_size", "Tree size of the newest checkpoint")
        cp_age = _gauge(
            "dtg_collateral_checkpoint_age_seconds", "Time since the newest checkpoint was signed"
        )
        if checkpoint is not None:
            cp_size.add_metric([], checkpoint.size)
            cp_age.add_metric([], _age(now, checkpoint.signed_at))
        return [log_size, pool, cp_size, cp_age]


class _Telemetry:
    def collect(self) -> Iterable[Metric]:
        return telemetry.REGISTRY.collect()


class Exporter:
    """One app's metrics: its registry and, once started, its HTTP server."""

    def __init__(
        self,
        settings: MetricsSettings,
        engine: Engine,
        http: Collects,
        *,
        stablecoin: Stablecoin | None = None,
        collateral: CollateralLog | None = None,
    ) -> None:
        self.settings = settings
        self.database = DatabaseGauges(
            engine,
            settings.database_refresh_seconds,
            stablecoin=stablecoin,
            collateral=collateral,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        info = _Info(self.database)
        for collector in (http, _Telemetry(), self.database, info):
            self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._server: Any = None
        self.port: int | None = None

    def start(self) -> None:
        """Serve on ``metrics.host``:``metrics.port`` (0: any free port; see :attr:`port`)."""
        if self.settings.port is None or self._server is not None:
            return
        server, _ = start_http_server(self.settings.port, self.settings.host, self.registry)
        self._server = server
        self.port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", self.settings.host, self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _Info:
    def __init__(self, database: DatabaseGauges) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        info = _gauge(
            "dtg_replica_info",
            "This replica: its version and job holder id",
            ("version", "replica"),
        )
        info.add_metric([__version__, self.database.replica or ""], 1)
        yield info


__all__ = ["DatabaseGauges", "Exporter"]
