"""The sweeper: every ``sweep_interval_ms``, aborts PvPs whose ``deadline - margin`` passed
without a decision, re-sends decisions not acknowledged (ACSC / camt.029) in time, and retries
inbound messages stored unprocessed. Mostly there is nothing: one probe finds out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.connector import store
from gateway.connector.delivery import Delivery
from gateway.connector.faults import Faults, fire_steps
from gateway.connector.handlers import Handlers
from gateway.connector.outbox import transaction
from gateway.connector.reception import Reception
from gateway.connector.store import now_ms
from gateway.sqlite.fastsql import run

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        handlers: Handlers,
        delivery: Delivery,
        reception: Reception,
        faults: Faults,
    ) -> None:
        self.settings = settings
        self.cfg = settings.connector
        self.engine = engine
        self.handlers = handlers
        self.delivery = delivery
        self.reception = reception
        self.faults = faults

    def loop(self) -> None:
        interval = self.cfg.sweep_interval_ms / 1000
        while not self.delivery.wait_stop(interval):
            try:
                self.sweep()
            except Exception:
                log.exception("connector sweep failed")

    def sweep(self) -> None:
        now = now_ms()
        due = {"due": now + self.cfg.safety_margin_ms, "limit": 500}
        stale_at = {"now": now, "limit": 500}
        cutoff = {"cutoff": now - 2000}
        overdue: list[str] = []
        stale: Sequence[Any] = ()
        pending: Sequence[Any] = ()
        with store.reader(self.engine) as conn:
            probe = run(conn, store.SWEEP_PROBE, {**due, **stale_at, **cutoff}).one()
            if probe.overdue:
                overdue = [r.id for r in run(conn, store.SELECT_OVERDUE, due)]
            if probe.stale:
                stale = run(conn, store.SELECT_STALE_LEGS, stale_at).all()
            if probe.inbox:
                pending = run(conn, store.SELECT_PENDING_INBOX, cutoff).all()
        for pvp_id in overdue:
            self.abort_if_overdue(pvp_id)
        if stale:
            with transaction(self.engine) as work:  # one transaction for the lot
                for pvp_id, leg_name in stale:
                    self.handlers.redeliver(work, pvp_id, leg_name)
            self.delivery.committed(work.sent)
        self.reception.process_inbox_rows(pending)
        held_since = self.delivery.held_since
        if held_since is not None and now_ms() - held_since > 1000:
            self.delivery.committed([])

    def abort_if_overdue(self, pvp_id: str) -> None:
        with transaction(self.engine) as work:
            if not self.handlers.abort_if_overdue(work, pvp_id):
                return
        fire_steps(self.faults, self.settings.faults, work.steps)
        self.delivery.committed(work.sent)


__all__ = ["Sweeper"]
