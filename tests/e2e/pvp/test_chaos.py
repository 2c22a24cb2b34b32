"""A randomized run: 200+ PvPs, ~10% of messages dropped, duplicated, delayed or reordered,
foreign legs refused now and then, DT payers running out of money, and both processes killed
with SIGKILL mid-run. At the end every PvP is atomic, balances reconcile to the expected totals
on both sides, and both sides conserve money."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.e2e.pvp.harness import (
    AED_PAYER,
    AED_RECEIVER,
    CB_WALLET,
    DT_WALLET,
    PvPProcesses,
)

pytestmark = pytest.mark.slow

FX_NETWORK = "CBAUAEAA"
N = int(os.environ.get("DT_GATEWAY_TEST_CHAOS_PVPS", "200"))
MESSAGE_FAULTS = [
    {"kind": "drop", "probability": 0.025},
    {"kind": "duplicate", "probability": 0.025},
    {"kind": "delay", "probability": 0.025, "delay_ms": 400},
    {"kind": "reorder", "probability": 0.025},
    # Business refusals: the simulated foreign bank rejects its leg now and then.
    {"kind": "reject", "probability": 0.03, "destination_bic": FX_NETWORK, "reason": "AM04"},
]
POOR_WALLET = "poor-dt"
POOR_FUNDS = 10_000_00


@dataclass
class Trade:
    pvp_id: str
    payer: str
    kzt: int
    aed: int


def inject_faults(world: PvPProcesses) -> None:
    """Faults live in the connector's memory: re-armed after each of its restarts."""
    for rule in MESSAGE_FAULTS:
        world.call(world.conn, "POST", "/v1/faults", json=rule)


def test_randomized_pvps_with_faults_and_kills_end_atomic_and_reconcile(
    make_world: Callable[..., PvPProcesses],
) -> None:
    seed = int(os.environ.get("DT_GATEWAY_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (DT_GATEWAY_TEST_SEED to replay)")
    world = make_world()
    world.call(
        world.op,
        "POST",
        "/v1/wallets",
        json={"id": POOR_WALLET, "kind": "participant", "owner": POOR_WALLET},
    )
    world.issue(POOR_WALLET, POOR_FUNDS)
    dt0 = {w: world.wallet(w)["posted"] for w in (DT_WALLET, POOR_WALLET, CB_WALLET)}
    aed0 = {a: world.aed(a)["total"] for a in (AED_PAYER, AED_RECEIVER)}
    inject_faults(world)

    kills = {N // 4: "gateway", N // 2: "connector", (3 * N) // 4: "gateway", N - 10: "both"}
    trades: list[Trade] = []
    for i in range(N):
        if (victim := kills.get(i)) is not None:
            if victim in ("gateway", "both"):
                world.gateway.restart()  # kill -9, then start on the same database
            if victim in ("connector", "both"):
                world.connector.restart()
                inject_faults(world)
        payer = POOR_WALLET if rng.random() < 0.15 else DT_WALLET
        trade = Trade(
            "PVP" + uuid.uuid4().hex[:24],
            payer,
            kzt=rng.randrange(1_00, 3_000_00),
            aed=rng.randrange(1, 2_00),
        )
        world.trade(
            kzt=trade.kzt,
            aed=trade.aed,
            dt_wallet=payer,
            pvp_id=trade.pvp_id,
            seconds=rng.uniform(5.0, 8.0),
        )
        trades.append(trade)
        time.sleep(0.03)  # spread the run, so that each kill catches some PvPs mid-flight

    views = world.wait_all_final([t.pvp_id for t in trades], timeout=90)
    world.call(world.conn, "DELETE", "/v1/faults")

    committed = [t for t in trades if views[t.pvp_id]["decision"]["decision"] == "COMMIT"]
    for t in trades:
        world.assert_atomic(t.pvp_id)
    by_outcome = {
        "COMMIT": len(committed),
        "ABORT": len(trades) - len(committed),
    }
    reasons = Counter(
        str(v["decision"]["reason"]) for v in views.values() if v["decision"]["decision"] == "ABORT"
    )
    print(f"chaos: {by_outcome}, abort reasons {dict(reasons)}")
    assert committed, "nothing committed: the run tested nothing"
    assert len(committed) < len(trades), "nothing aborted: the faults did not bite"

    def paid(payer: str) -> int:
        return sum(t.kzt for t in committed if t.payer == payer)

    assert world.wallet(DT_WALLET)["posted"] == dt0[DT_WALLET] - paid(DT_WALLET)
    assert world.wallet(POOR_WALLET)["posted"] == dt0[POOR_WALLET] - paid(POOR_WALLET)
    assert world.wallet(CB_WALLET)["posted"] == dt0[CB_WALLET] + sum(t.kzt for t in committed)
    assert all(world.wallet(w)["reserved"] == 0 for w in (DT_WALLET, POOR_WALLET))
    aed_moved = sum(t.aed for t in committed)
    assert world.aed(AED_PAYER) == {
        "currency": "AED",
        "account": AED_PAYER,
        "available": aed0[AED_PAYER] - aed_moved,
        "held": 0,
        "total": aed0[AED_PAYER] - aed_moved,
    }
    assert world.aed(AED_RECEIVER)["available"] == aed0[AED_RECEIVER] + aed_moved
    world.assert_conserved()
