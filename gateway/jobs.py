"""Scheduled work (APScheduler). Each job only calls services, and runs under a database lease
named after it, so that with several replicas on one database each job runs on one at a time."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from gateway import leases
from gateway.collateral import service as collateral
from gateway.collateral import witnessing
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import Settings
from gateway.db import utcnow
from gateway.errors import GatewayError
from gateway.ledger import service as ledger
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.lanes import LaneSettings
from gateway.messaging.outbox import OutboxDispatcher, Sender
from gateway.pvp.runtime import PvPRuntime
from gateway.stablecoin import endpoints_service, watcher, webhooks
from gateway.stablecoin import service as stablecoin
from gateway.stablecoin.store import StablecoinUnitOfWork

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

log = logging.getLogger(__name__)

_LANE = LaneSettings(threads=2)
"""The outbox job's lanes, one per destination host (an exchange's webhook endpoints): a
slow or unreachable endpoint holds up its own deliveries only."""


class FailureLog:
    """How one job's failures reach the log. While a dependency is down a job fails at every
    run, several times a second: the first failure of a run of failures of one kind is logged
    with its traceback, then one summary line at most every ``every`` seconds while the run
    lasts, and one line when the job next succeeds. A failure of another kind starts a new run.
    ``monotonic`` gives the seconds these intervals are measured in."""

    def __init__(self, job: str, monotonic: Callable[[], float], every: float = 30.0) -> None:
        self.job = job
        self.monotonic = monotonic
        self.every = every
        self.kind: str | None = None
        """The kind of the failures of the current run (None: the job is not failing)."""
        self.failures = 0
        self.unreported = 0
        self.since = 0.0
        self.reported_at = 0.0

    @staticmethod
    def kind_of(exc: BaseException) -> str:
        code = exc.code if isinstance(exc, GatewayError) else None
        return f"{type(exc).__module__}.{type(exc).__qualname__}" + (f" {code}" if code else "")

    def failed(self, exc: BaseException) -> None:
        now, kind = self.monotonic(), self.kind_of(exc)
        if kind != self.kind:
            self.kind, self.failures, self.unreported = kind, 1, 0
            self.since = self.reported_at = now
            log.error("job %s failed", self.job, exc_info=exc)
            return
        self.failures += 1
        self.unreported += 1
        if now - self.reported_at >= self.every:
            log.error(
                "job %s still failing: %d more failures in %.0f s, %d since it began %.0f s "
                "ago; the last: %s",
                self.job,
                self.unreported,
                now - self.reported_at,
                self.failures,
                now - self.since,
                exc,
            )
            self.unreported, self.reported_at = 0, now

    def succeeded(self) -> None:
        if self.kind is None:
            return
        log.warning(
            "job %s recovered after %d failures in %.0f s",
            self.job,
            self.failures,
            self.monotonic() - self.since,
        )
        self.kind = None


class Jobs:
    """The scheduled jobs of one replica. ``clock`` gives the time leases and the outbox are
    written with, ``monotonic`` the seconds by which a lease held is renewed (both the
    system's unless a test drives them)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        senders: Mapping[str, Sender] | None = None,
        stablecoin: Stablecoin | None = None,
        pvp: PvPRuntime | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.monotonic = monotonic
        self.holder = secrets.token_hex(8)
        self.stablecoin = stablecoin
        self.pvp = pvp
        senders = dict(senders or {})
        if stablecoin is not None:  # exchanges register webhook endpoints at any time
            senders.setdefault(
                webhooks.TOPIC,
                webhooks.WebhookSender(
                    engine,
                    endpoints_service.policy_of(settings),
                    settings.stablecoin.webhook_timeout_seconds,
                ),
            )
        self.dispatcher = OutboxDispatcher(engine, senders, clock=clock, name="jobs", lanes=_LANE)
        self._names = ["ledger.expire_locks", "outbox.dispatch"]
        self.witness_transport: witnessing.HttpTransport | None = None
        self.scheduler = BackgroundScheduler(daemon=True)

    def _leased(self, name: str, ttl: timedelta, fn: Callable[[], object]) -> Callable[[], None]:
        """``fn`` under the lease ``name``. A lease held is renewed once half its time has
        passed, not at every run: a renewal is a write transaction (with its fsync), and
        most of these jobs run every second or more often. Until then no other replica can
        take it, so running meanwhile is as safe as right after a renewal."""
        held_until = 0.0
        failures = FailureLog(name, self.monotonic)

        def run() -> None:
            nonlocal held_until
            try:
                now = self.monotonic()
                if now >= held_until - ttl.total_seconds() / 2:
                    if not leases.acquire(self.engine, name, self.holder, ttl, now=self.clock()):
                        held_until = 0.0
                        return
                    held_until = now + ttl.total_seconds()
                fn()
                failures.succeeded()
            except Exception as exc:  # a job failure must not kill the scheduler; it runs again
                failures.failed(exc)

        return run

    def expire_locks(self) -> int:
        return len(ledger.expire_locks(LedgerUnitOfWork(self.engine)))

    def dispatch_outbox(self) -> int:
        """Hand what is due to the lanes of its destinations; how many rows."""
        return self.dispatcher.dispatch()

    def _stablecoin_uow(
        self, *, readonly: bool = False, snapshot: bool = False
    ) -> StablecoinUnitOfWork:
        return StablecoinUnitOfWork(self.engine, readonly=readonly, snapshot=snapshot)

    def watch_redemptions(self) -> int:
        assert self.stablecoin is not None
        return len(watcher.poll(self._stablecoin_uow, self.stablecoin).redemptions)

    def resume_mints(self) -> int:
        assert self.stablecoin is not None
        return len(stablecoin.resume_mints(self._stablecoin_uow, self.stablecoin))

    def integrate_collateral(self) -> int:
        assert self.stablecoin is not None and self.stablecoin.collateral is not None
        return collateral.integrate(self._collateral_uow, self.stablecoin.collateral).added

    def witness_collateral(self) -> int:
        assert self.stablecoin is not None and self.stablecoin.collateral is not None
        assert self.witness_transport is not None
        transport = self.witness_transport
        return len(
            witnessing.submit(
                self._collateral_uow, self.stablecoin.collateral, transport, pool=transport.pool
            ).cosigned
        )

    def _collateral_uow(self, *, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(self.engine, readonly=readonly)

    def reconcile(self) -> bool:
        assert self.stablecoin is not None
        result = stablecoin.reconcile(self._stablecoin_uow, self.stablecoin)
        return result is None or result.ok

    def _every(self, name: str, seconds: float, fn: Callable[[], object]) -> None:
        self._names.append(name)
        self.scheduler.add_job(
            # Short leases: a replica killed mid-run blocks the job only briefly, and every
            # stablecoin job is idempotent, so a rare overlap is harmless.
            self._leased(name, timedelta(seconds=max(2.0, seconds * 10)), fn),
            "interval",
            seconds=seconds,
            max_instances=1,
            coalesce=True,
        )

    def start(self) -> None:
        self.dispatcher.release_leases_at_start()  # webhooks of a run killed mid-delivery
        sweep = self.settings.ledger.expiry_sweep_seconds
        self.scheduler.add_job(
            self._leased("ledger.expire_locks", timedelta(seconds=sweep * 5), self.expire_locks),
            "interval",
            seconds=sweep,
            max_instances=1,
            coalesce=True,
        )
        if self.dispatcher.senders:
            self.scheduler.add_job(
                # Rows are claimed with their own lease, so a short job lease is safe, and a
                # killed replica holds up delivery for two seconds at most.
                self._leased("outbox.dispatch", timedelta(seconds=2), self.dispatch_outbox),
                "interval",
                seconds=0.2,
                max_instances=1,
                coalesce=True,
            )
        if self.stablecoin is not None:
            sc = self.settings.stablecoin
            self._every("stablecoin.watch_redemptions", sc.poll_seconds, self.watch_redemptions)
            self._every(
                "stablecoin.resume_mints",
                max(sc.mint_retry_after_seconds / 2, 0.1),
                self.resume_mints,
            )
            self._every("stablecoin.reconcile", sc.reconcile_seconds, self.reconcile)
            if self.stablecoin.collateral is not None:
                cs = self.settings.collateral
                self._every("collateral.integrate", cs.integrate_seconds, self.integrate_collateral)
                if self.stablecoin.collateral.witnesses:
                    self.witness_transport = witnessing.HttpTransport(cs.witness_timeout_seconds)
                    self._names.append("collateral.witness")
                    self.scheduler.add_job(
                        # The lease outlives a round that waits for a slow witness, so that
                        # another replica does not submit the same checkpoint meanwhile.
                        self._leased(
                            "collateral.witness",
                            timedelta(seconds=max(2.0, 2 * cs.witness_timeout_seconds + 1)),
                            self.witness_collateral,
                        ),
                        "interval",
                        seconds=cs.witness_seconds,
                        max_instances=1,
                        coalesce=True,
                    )
        if self.pvp is not None:
            pvp, every = self.pvp, self.settings.pvp.sweep_seconds
            self._every("pvp.recover_inbox", every, pvp.recover_inbox)
            self._every("pvp.check_deadlines", every, pvp.check_deadlines)
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.dispatcher.stop()  # the lanes deliver what is queued, then their deliveries recorded
        if self.witness_transport is not None:
            self.witness_transport.close()
        for name in self._names:
            leases.release(self.engine, name, self.holder)


__all__ = ["FailureLog", "Jobs"]
