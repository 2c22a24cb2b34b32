"""The sweeper: every ``sweep_interval_ms``, aborts PvPs whose ``deadline - margin`` passed
without a decision, re-sends decisions not acknowledged (ACSC / camt.029) in time, and retries
inbound messages stored unprocessed. Mostly there is nothing: one probe finds out."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.connector import store
from gateway.connector.delivery import Delivery
from gateway.connector.faults import Faults, fire_steps
from gateway.connector.handlers import Handlers
from gateway.connector.outbox import transaction
from gateway.connector.reception import Reception
from gateway.connector.rows import InboxRow, LegKey
from gateway.connector.store import now_ms

log = logging.getLogger(__name__)

_LIMIT = 500
"""PvPs aborted, and decisions sent again, per sweep at most."""


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
        due, cutoff = now + self.cfg.safety_margin_ms, now - 2000
        overdue: list[str] = []
        stale: list[LegKey] = []
        pending: list[InboxRow] = []
        with store.reader(self.engine) as conn:
            probe = store.sweep_probe(conn, due=due, now=now, cutoff=cutoff)
            if probe.overdue:
                overdue = store.overdue_pvps(conn, due, _LIMIT)
            if probe.stale:
                stale = store.stale_legs(conn, now, _LIMIT)
            if probe.inbox:
                pending = store.pending_inbox(conn, cutoff)
        for pvp_id in overdue:
            self.abort_if_overdue(pvp_id)
        if stale:
            with transaction(self.engine) as work:  # one transaction for the lot
                for key in sorted(stale):  # their PvPs locked in one order, as a message's are
                    self.handlers.redeliver(work, key.pvp_id, key.leg)
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
