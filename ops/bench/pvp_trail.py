"""When a PvP of the PvP benchmark (``ops/bench/pvp.py``) settled, and where its time went.

Read after the clock stopped, from what each party recorded in its own transactions: the
connector's message log (a *trail*: ``(direction, peer BIC, message, at)`` in order, the
simulated AED bank's ACSC written in the transaction that settles its leg) and the gateway's
settled DT leg. Nothing here polls while a run is measured.
"""

from __future__ import annotations

import time
from datetime import datetime

from tests.e2e.pvp.harness import GATEWAY_BIC, PvPProcesses

Trail = list[tuple[str, str, str, float]]
"""A PvP's messages as the connector logged them: (direction, peer BIC, message, at)."""


def timestamp(value: str) -> float:
    """An ISO 8601 time (``Z`` or an offset) as seconds since the epoch."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def trail(world: PvPProcesses, pvp_id: str) -> Trail:
    """The PvP's messages as the connector logged them once both legs settled:
    (direction, peer BIC, message, at) in order."""
    end = time.monotonic() + 30
    view = world.connector_pvp(pvp_id)
    while view["state"] == "committed" and time.monotonic() < end:
        # Both ledgers moved; the connector may not have recorded the last ACSC yet.
        time.sleep(0.05)
        view = world.connector_pvp(pvp_id)
    if view["state"] != "settled":
        raise SystemExit(f"PvP {pvp_id} ended {view['state']}: {view['decision']}")
    return [
        (m["direction"], m["peer_bic"], m["message"], timestamp(m["at"]))
        for m in world.connector_messages(pvp_id)
    ]


def settled_at(trail: Trail) -> float:
    """When the connector recorded the last ACSC of the PvP (both legs settled)."""
    return max(at for d, _, name, at in trail if d == "in" and name.startswith("pacs.002"))


def dt_settled_at(world: PvPProcesses, pvp_id: str) -> float:
    """When the gateway settled the PvP's DT leg: the leg's time, set by the transaction
    that settled it (a settled leg never changes again)."""
    legs = [leg for leg in world.gateway_pvp(pvp_id)["legs"] if leg["state"] == "settled"]
    if not legs:
        raise SystemExit(f"PvP {pvp_id}: the gateway has no settled DT leg")
    return max(timestamp(leg["updated_at"]) for leg in legs)


def legs_settled_at(trail: Trail, dt_settled: float) -> float:
    """When the later of the two legs settled: the DT leg at ``dt_settled``, each other
    network's when it reported ACSC (its second status in the connector's log; the simulated
    bank's is written in the transaction that settles it)."""
    ins: dict[str, list[float]] = {}
    for direction, peer, name, at in trail:
        if direction == "in" and name.startswith("pacs.002") and peer != GATEWAY_BIC:
            ins.setdefault(peer, []).append(at)
    return max([dt_settled, *(ats[1] for ats in ins.values())])


def steps(trail: Trail, t0: float) -> dict[str, float]:
    """Where a PvP's time went, in ms, from the connector's log: the trade to its pacs.009s,
    then per network its pacs.009 to its ACSP (the lock) and the decision to its ACSC (the
    settlement). The decision is made in the transaction that processes the second ACSP."""
    outs: dict[str, list[float]] = {}
    ins: dict[str, list[float]] = {}
    for direction, peer, _name, at in trail:
        (outs if direction == "out" else ins).setdefault(peer, []).append(at)
    steps = {"trade -> pacs.009s": (min(o[0] for o in outs.values()) - t0) * 1000}
    for peer in sorted(outs):
        steps[f"{peer} pacs.009 -> ACSP"] = (ins[peer][0] - outs[peer][0]) * 1000
        steps[f"{peer} decision -> ACSC"] = (ins[peer][1] - outs[peer][1]) * 1000
    return steps


def pct(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values: the one ranked ``int(len * q)``, or the last."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
