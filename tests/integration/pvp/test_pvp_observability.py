"""What a PvP leaves for operators, on SQLite and PostgreSQL: each leg counted and timed once
when it reaches its final state, and the log records of a message carrying its UETR and PvP id."""

from __future__ import annotations

import logging

import pytest

from gateway import telemetry
from gateway.logcontext import ContextFilter
from tests.support.inprocess_pvp import InProcessPvP, Leg, uetr


def _finished(state: str) -> tuple[float, float]:
    """(legs finished in ``state``, observations of their latency) so far in this process."""
    counted = observed = 0.0
    for metric in telemetry.REGISTRY.collect():
        for s in metric.samples:
            if s.labels.get("state") != state:
                continue
            if s.name == "dtg_pvp_legs_finished_total":
                counted = s.value
            elif s.name == "dtg_pvp_leg_seconds_count":
                observed = s.value
    return counted, observed


def test_a_settled_leg_is_counted_and_timed_once(world: InProcessPvP) -> None:
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    before = _finished("settled")
    leg = Leg(uetr(), 250_000)
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "ACSP")
    assert _finished("settled") == before  # locked is not final
    world.post(world.fulfil(leg))
    world.connector.wait_status(leg.uetr, "ACSC")
    assert _finished("settled") == (before[0] + 1, before[1] + 1)
    # A leg already final, written again (as a repeated decision may), is not counted again.
    uow = world.runtime.uow()
    with uow:
        settled = uow.pvp.legs_for_update([leg.uetr])[leg.uetr]
        uow.pvp.update_legs([settled])
        uow.commit()
    assert _finished("settled") == (before[0] + 1, before[1] + 1)


def test_a_rejected_leg_is_logged_with_its_uetr_and_pvp_id(
    world: InProcessPvP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO, logger="gateway.pvp")
    world.wallet("hsbk-dt", fund=100)
    world.wallet("cbuae-dt")
    before = _finished("rejected")
    leg = Leg(uetr(), 250_000, pvp_id="PVP-LOGGED")
    world.post(world.pacs009(leg))
    world.connector.wait_status(leg.uetr, "RJCT")
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert rejected, caplog.text
    assert {(getattr(r, "uetr", None), getattr(r, "pvp_id", None)) for r in rejected} == {
        (leg.uetr, "PVP-LOGGED")
    }
    assert _finished("rejected") == (before[0] + 1, before[1] + 1)
