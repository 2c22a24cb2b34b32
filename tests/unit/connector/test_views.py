"""What the API shows of a PvP (``gateway.connector.views``), from the store's typed rows:
plain JSON values (states as their strings, times as ISO 8601 in UTC), the decision once there
is one, and ``completed`` once every network acknowledged it."""

from __future__ import annotations

import json

from gateway.connector.messages import iso
from gateway.connector.views import pvp_view
from tests.unit.connector.fakes import DT_NETWORK, FX_NETWORK, MARGIN_MS, World

FAR = 10 * MARGIN_MS


def _view(world: World, pvp_id: str) -> dict[str, object]:
    repo = world.repo
    view = pvp_view(
        repo.pvps[pvp_id], repo.decisions.get(pvp_id), repo.read_legs(world.work(), pvp_id)
    )
    # What the API encodes is what json encodes: no enum or other object left inside.
    assert json.loads(json.dumps(view)) == view
    return view


def test_a_pending_pvp_shows_its_terms_and_legs_without_a_decision() -> None:
    world = World.make()
    pvp = world.pvp(deadline_in_ms=FAR)

    view = _view(world, pvp.id)

    assert view["pvp_id"] == pvp.id and view["condition"] == pvp.condition
    assert (view["state"], view["decision"], view["completed"]) == ("pending", None, False)
    assert view["deadline"] == iso(pvp.deadline)
    dt, fx = view["legs"]  # type: ignore[misc]
    assert (dt["leg"], dt["network_bic"], dt["status"]) == ("DT", DT_NETWORK, "instructed")
    assert (fx["leg"], fx["network_bic"], fx["status"]) == ("FX", FX_NETWORK, "instructed")
    assert type(dt["status"]) is str and dt["locked_at"] is None


def test_a_settled_pvp_shows_its_commit_and_is_completed() -> None:
    world = World.make()
    pvp = world.pvp(deadline_in_ms=FAR)
    for name, network in (("DT", DT_NETWORK), ("FX", FX_NETWORK)):
        assert world.receive(world.status(world.leg(pvp, name), "ACSP"), network)
    decision = world.repo.decisions[pvp.id]
    for name, network in (("DT", DT_NETWORK), ("FX", FX_NETWORK)):
        assert world.receive(world.status(world.leg(pvp, name), "ACSC"), network)

    view = _view(world, pvp.id)

    assert (view["state"], view["completed"]) == ("settled", True)
    assert view["decision"] == {
        "decision": "COMMIT",
        "reason": None,
        "detail": "both legs locked in time",
        "decided_at": iso(decision.decided_at),
    }
    legs = view["legs"]
    assert isinstance(legs, list)
    assert [(g["status"], g["acknowledged"]) for g in legs] == [("settled", True)] * 2
    assert all(g["locked_at"] == iso(world.leg(pvp, g["leg"]).locked_at) for g in legs)
