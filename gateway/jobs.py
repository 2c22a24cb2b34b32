"""Scheduled work (APScheduler). Each job only calls services, and runs under a database lease
named after it, so that with several replicas on one database each job runs on one at a time."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from gateway import leases
from gateway.config import Settings
from gateway.ledger import service as ledger
from gateway.ledger.store import LedgerUnitOfWork
from gateway.outbox import OutboxDispatcher, Sender

log = logging.getLogger(__name__)


class Jobs:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        senders: Mapping[str, Sender] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.holder = secrets.token_hex(8)
        self.dispatcher = OutboxDispatcher(engine, senders or {})
        self.scheduler = BackgroundScheduler(daemon=True)

    def _leased(self, name: str, ttl: timedelta, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                if leases.acquire(self.engine, name, self.holder, ttl):
                    fn()
            except Exception:  # a job failure must not kill the scheduler; it runs again
                log.exception("job %s failed", name)

        return run

    def expire_locks(self) -> int:
        return len(ledger.expire_locks(LedgerUnitOfWork(self.engine)))

    def dispatch_outbox(self) -> int:
        return self.dispatcher.run_once()

    def start(self) -> None:
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
                self._leased("outbox.dispatch", timedelta(seconds=30), self.dispatch_outbox),
                "interval",
                seconds=0.2,
                max_instances=1,
                coalesce=True,
            )
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        for name in ("ledger.expire_locks", "outbox.dispatch"):
            leases.release(self.engine, name, self.holder)


__all__ = ["Jobs"]
