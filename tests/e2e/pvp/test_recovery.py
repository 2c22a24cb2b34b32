"""``kill -9`` of either party at the worst moments; after a restart every PvP ends atomic.

Crash points make the process SIGKILL itself at a precise step (``DT_GATEWAY_FAULTS__CRASH_POINTS``
for the gateway; ``crash_after`` faults for the connector); a restart without them resumes from
the database alone.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.pvp.harness import AED_RECEIVER, CB_WALLET, DT_WALLET, GATEWAY_BIC, PvPProcesses

KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PvPProcesses]:
    """One pair of processes for the module: each test kills and restarts them, keeping
    their databases, and uses its own PvP ids."""
    w = PvPProcesses(tmp_path_factory.mktemp("pvp-recovery"))
    try:
        yield w.setup()
    finally:
        w.close()


@pytest.fixture
def world(shared: PvPProcesses) -> Iterator[PvPProcesses]:
    yield shared
    # Whatever a test left behind: both processes up, without crash points or faults.
    for proc in (shared.connector, shared.gateway):
        if not proc.alive or proc.extra:
            proc.restart()
    shared.call(shared.conn, "DELETE", "/v1/faults")


def crash_env(*points: str) -> dict[str, str]:
    return {"DT_GATEWAY_FAULTS__CRASH_POINTS": json.dumps(list(points))}


def expect_outcome(world: PvPProcesses, pvp_id: str, dt_before: int, amount: int) -> str:
    view = world.wait_final(pvp_id, timeout=60)
    decision = world.assert_atomic(pvp_id)
    assert view["decision"]["decision"] == decision
    moved = amount if decision == "COMMIT" else 0
    assert world.wallet(DT_WALLET)["posted"] == dt_before - moved
    assert world.wallet(DT_WALLET)["reserved"] == 0
    world.assert_conserved()
    return decision


@pytest.mark.parametrize(
    ("point", "outcome", "on_receipt"),
    [
        # Messages applied in the transaction that stores them (pvp.process_on_receipt):
        ("pvp.after_inbox", "COMMIT", True),  # stored and locked, no 202: the connector re-sends
        ("pvp.before_lock", "COMMIT", True),  # nothing stored: the connector re-sends
        ("pvp.after_lock", "COMMIT", True),  # locked, ACSP in the outbox, not sent
        ("pvp.before_commit", "COMMIT", True),  # fulfilment applied, not committed
        ("pvp.after_commit", "COMMIT", True),  # settled, ACSC not sent
        # Stored, answered, then applied in a transaction of its own:
        ("pvp.after_inbox", "COMMIT", False),  # stored, not applied, no 202
        ("pvp.before_lock", "COMMIT", False),  # stored; the lock rolled back with its transaction
        ("pvp.after_lock", "COMMIT", False),  # locked, ACSP in the outbox, not sent
    ],
)
def test_gateway_killed_between_lock_and_commit(
    world: PvPProcesses, point: str, outcome: str, on_receipt: bool
) -> None:
    world.gateway.restart(
        {**crash_env(point), "DT_GATEWAY_PVP__PROCESS_ON_RECEIPT": str(on_receipt).lower()}
    )
    before = world.wallet(DT_WALLET)["posted"]
    aed_before = world.aed(AED_RECEIVER)["available"]

    # The deadline leaves room for a restart on a loaded machine (two test workers, each with
    # its processes): a restart past it ends the PvP ABORT, correctly, but not as this test asks.
    pvp_id = world.trade(kzt=4_000_00, aed=3_00, seconds=30)

    assert world.gateway.wait_exit() == KILLED
    world.gateway.start()
    assert expect_outcome(world, pvp_id, before, 4_000_00) == outcome
    assert world.aed(AED_RECEIVER)["available"] == aed_before + 3_00


def test_gateway_killed_while_locked_past_the_deadline_asks_and_aborts(
    world: PvPProcesses,
) -> None:
    """The gateway locks, then dies for longer than the PvP's deadline: the connector cannot
    have both ACSP in time and aborts; the restarted gateway releases on its camt.056."""
    world.gateway.restart(crash_env("pvp.after_lock"))
    before = world.wallet(DT_WALLET)["posted"]

    pvp_id = world.trade(kzt=4_000_00, aed=3_00, seconds=1.5)

    assert world.gateway.wait_exit() == KILLED
    world.wait_connector(pvp_id, lambda v: v["decision"] is not None, "the decision")
    world.gateway.start()
    assert expect_outcome(world, pvp_id, before, 4_000_00) == "ABORT"
    assert world.connector_pvp(pvp_id)["decision"]["reason"] == "TMOT"


def test_gateway_kill_9_from_outside_while_locked(world: PvPProcesses) -> None:
    before = world.wallet(DT_WALLET)["posted"]
    cb_before = world.wallet(CB_WALLET)["posted"]
    pvp_id = "PVP-kill-locked-1"
    world.call(
        world.conn,
        "POST",
        "/v1/faults",
        json={
            "kind": "delay",
            "pvp_id": pvp_id,
            "message_type": "pacs.002",
            "destination_bic": GATEWAY_BIC,
            "delay_ms": 1500,
        },
    )
    world.trade(kzt=1_000_00, aed=1_00, pvp_id=pvp_id, seconds=10)
    world.wait_gateway_leg(pvp_id, "locked")
    world.gateway.kill()
    world.gateway.start()
    assert expect_outcome(world, pvp_id, before, 1_000_00) == "COMMIT"
    assert world.wallet(CB_WALLET)["posted"] == cb_before + 1_000_00


@pytest.mark.parametrize("step", ["matched", "received_acsp", "decided", "sent_decision"])
def test_connector_killed_after_deciding_and_before_sending(world: PvPProcesses, step: str) -> None:
    before = world.wallet(DT_WALLET)["posted"]
    aed_before = world.aed(AED_RECEIVER)["available"]
    world.call(world.conn, "POST", "/v1/faults", json={"kind": "crash_after", "step": step})

    pvp_id = "PVP-crash-" + step.replace("_", "-")
    # "matched" kills the connector before it answers the trade request.
    with contextlib.suppress(httpx.HTTPError, AssertionError):
        world.trade(kzt=2_000_00, aed=2_00, pvp_id=pvp_id, seconds=10)

    assert world.connector.wait_exit() == KILLED
    world.connector.start()
    assert expect_outcome(world, pvp_id, before, 2_000_00) == "COMMIT"
    assert world.aed(AED_RECEIVER)["available"] == aed_before + 2_00
