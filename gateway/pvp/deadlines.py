"""Locked legs past their deadline: the gateway asks, it never releases on its own authority."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.db import retrying, utcnow
from gateway.iso20022 import Pacs028, StatusRequest
from gateway.pvp.context import PvPContext, new_msg_id
from gateway.pvp.model import Leg
from gateway.pvp.outbound import original_of, queue_message
from gateway.pvp.store import PvPUnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadlineReport:
    asked: tuple[str, ...] = ()
    """The legs whose status was asked, in one pacs.028 queued for the connector."""
    alerted: tuple[str, ...] = ()
    """The legs whose last-resort alert was raised now."""


def check_deadlines(
    uow: PvPUnitOfWork, ctx: PvPContext, now: datetime | None = None, limit: int = 200
) -> DeadlineReport:
    """Locked legs past deadline + grace: ask the connector (pacs.028), never release.

    Past the last-resort deadline, raise the alert once (ERROR log + flag on the leg) and keep
    asking: the connector's answer still decides, until an operator resolves the leg.
    """
    at = now or utcnow()

    def work() -> DeadlineReport:
        cutoff = at - timedelta(seconds=ctx.grace_seconds)
        candidates = uow.pvp.locked_legs_past(cutoff, limit)
        if not candidates:
            return DeadlineReport()
        legs = uow.pvp.legs_for_update(leg.uetr for leg in candidates)
        asked: list[Leg] = []
        alerted: list[Leg] = []
        for leg in legs.values():
            if leg.past_last_resort(at, ctx.last_resort_seconds) and leg.alert_at is None:
                leg = leg.raise_alert(at)
                alerted.append(leg)
                log.error(
                    "PvP leg %s (PvP %s) still locked %.0fs past its deadline: "
                    "operator decision needed (POST /v1/pvp/%s/resolve)",
                    leg.uetr,
                    leg.terms.pvp_id if leg.terms else None,
                    (at - (leg.deadline or at)).total_seconds(),
                    leg.terms.pvp_id if leg.terms and leg.terms.pvp_id else leg.uetr,
                )
            if leg.needs_status_request(at, ctx.grace_seconds, ctx.status_retry_seconds):
                asked.append(leg.status_requested(at))
        touched = {leg.uetr: leg for leg in [*alerted, *asked]}
        uow.pvp.update_legs(list(touched.values()))
        if asked:
            request = Pacs028(
                new_msg_id(),
                at,
                tuple(StatusRequest(original_of(leg), new_msg_id()) for leg in asked),
            )
            queue_message(uow, ctx, request, (leg.uetr for leg in asked), at)
        return DeadlineReport(tuple(leg.uetr for leg in asked), tuple(leg.uetr for leg in alerted))

    return retrying(uow, work)


__all__ = ["DeadlineReport", "check_deadlines"]
