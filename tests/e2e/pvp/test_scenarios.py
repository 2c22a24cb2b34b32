"""Worked PvP scenarios between the real gateway and the real connector mock, over HTTP.

One pair of processes serves the whole module (each scenario uses its own wallets and its own
PvP ids, and faults are scoped to its PvP), so the set stays quick. Every message either side
reads is parsed, schema-validated and signature-checked by ``gateway.iso20022``.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.iso20022 import (
    Camt029,
    Camt056,
    CancellationRequest,
    Money,
    Pacs002,
    Pacs028,
    PvPTerms,
    StatusRequest,
    TransactionStatus,
)
from tests.e2e.pvp.harness import (
    AED_PAYER,
    AED_RECEIVER,
    CB_WALLET,
    CONNECTOR_BIC,
    GATEWAY_BIC,
    PvPProcesses,
    wait_for,
)

FX_NETWORK = "CBAUAEAA"  # the simulated UAE central bank inside the connector
# A short deadline for the scenarios about deadlines, with room for the safety margin and a
# loaded machine: a leg not held back is locked well before it, so only what a scenario holds
# back (a pacs.009, a decision) makes the PvP meet the deadline unsettled.
DEADLINE_SECONDS = 3.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PvPProcesses]:
    # Decisions are not re-sent for 20 s here, so that a test can hold one back (a delay
    # fault) and see what the gateway does meanwhile.
    w = PvPProcesses(
        tmp_path_factory.mktemp("pvp-scenarios"),
        connector_settings={"DT_GATEWAY_CONNECTOR__REDELIVER_AFTER_MS": "20000"},
    )
    try:
        yield w.setup()
    finally:
        w.close()


@pytest.fixture(autouse=True)
def _no_faults(world: PvPProcesses) -> Iterator[None]:
    yield
    world.call(world.conn, "DELETE", "/v1/faults")


def new_pvp_id() -> str:
    return "PVP" + uuid.uuid4().hex[:20]


def dt_wallet(world: PvPProcesses, amount: int) -> str:
    """A fresh participant wallet holding ``amount`` DT."""
    wallet = "w-" + uuid.uuid4().hex[:10]
    world.call(
        world.op,
        "POST",
        "/v1/wallets",
        json={"id": wallet, "kind": "participant", "owner": wallet},
    )
    if amount:
        world.issue(wallet, amount)
    return wallet


def fault(world: PvPProcesses, **rule: Any) -> None:
    world.call(world.conn, "POST", "/v1/faults", json=rule)


def balances(world: PvPProcesses, wallet: str) -> dict[str, int]:
    w, cb = world.wallet(wallet), world.wallet(CB_WALLET)
    return {
        "dt_payer": w["posted"],
        "dt_reserved": w["reserved"],
        "dt_cb": cb["posted"],
        "aed_payer": world.aed(AED_PAYER)["total"],
        "aed_receiver": world.aed(AED_RECEIVER)["total"],
        "aed_held": world.aed(AED_PAYER)["held"],
    }


def statuses(messages: list[Any]) -> list[tuple[str, str | None]]:
    return [(t.status, t.reason) for m in messages for t in m.transactions]


def hold_decisions(
    world: PvPProcesses, pvp_id: str, ms: int = 3000, count: int | None = None
) -> None:
    """Delay what the connector sends the gateway after the pacs.009 (its decision)."""
    for kind in ("pacs.002", "camt.056"):
        fault(
            world,
            kind="delay",
            pvp_id=pvp_id,
            message_type=kind,
            destination_bic=GATEWAY_BIC,
            delay_ms=ms,
            count=count,
        )


def test_dt_aed_pvp_settles_both_legs(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 5_000_00)
    before = balances(world, wallet)
    pvp_id = world.trade(kzt=1_234_56, aed=9_87, dt_wallet=wallet)

    view = world.wait_final(pvp_id)

    assert view["decision"]["decision"] == "COMMIT"
    assert world.assert_atomic(pvp_id) == "COMMIT"
    after = balances(world, wallet)
    assert after["dt_payer"] == before["dt_payer"] - 1_234_56
    assert after["dt_cb"] == before["dt_cb"] + 1_234_56
    assert after["aed_payer"] == before["aed_payer"] - 9_87
    assert after["aed_receiver"] == before["aed_receiver"] + 9_87
    assert after["dt_reserved"] == after["aed_held"] == 0
    # The gateway answered ACSP (locked), then ACSC (settled): signed, valid pacs.002.
    assert statuses(world.from_gateway(pvp_id, "pacs.002")) == [("ACSP", None), ("ACSC", None)]
    gw = world.gateway_pvp(pvp_id)
    assert [(m["direction"], m["msg_def_id"]) for m in gw["messages"]] == [
        ("in", "pacs.009.001.08"),
        ("out", "pacs.002.001.10"),
        ("in", "pacs.002.001.10"),
        ("out", "pacs.002.001.10"),
    ]
    leg = gw["legs"][0]
    assert (leg["state"], leg["status"], leg["amount"]) == ("settled", "ACSC", 1_234_56)
    assert (leg["debtor_account"], leg["creditor_account"]) == (wallet, CB_WALLET)
    world.assert_conserved()


def test_insufficient_dt_aborts_and_releases_the_foreign_leg(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 100_00)
    before = balances(world, wallet)
    pvp_id = world.trade(kzt=100_01, aed=5_00, dt_wallet=wallet)

    view = world.wait_final(pvp_id)

    assert view["decision"]["decision"] == "ABORT" and view["decision"]["reason"] == "AM04"
    legs = {leg["leg"]: leg for leg in view["legs"]}
    assert legs["DT"]["status"] == "rejected" and legs["DT"]["reason"] == "AM04"
    assert legs["FX"]["status"] in ("released", "rejected")  # locked then released, or never
    world.assert_atomic(pvp_id)
    assert world.gateway_pvp(pvp_id)["legs"][0]["reason"] == "AM04"
    assert balances(world, wallet) == before  # nothing moved, nothing held
    world.assert_conserved()


def test_foreign_leg_rejected_releases_the_dt_lock(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 5_000_00)
    before = balances(world, wallet)
    pvp_id = new_pvp_id()
    fault(world, kind="reject", pvp_id=pvp_id, destination_bic=FX_NETWORK, reason="AC06")
    world.trade(kzt=2_000_00, aed=1_00, dt_wallet=wallet, pvp_id=pvp_id)

    view = world.wait_final(pvp_id)

    assert view["decision"]["decision"] == "ABORT" and view["decision"]["reason"] == "AC06"
    world.assert_atomic(pvp_id)
    # The gateway locked and then released on the camt.056 (or, had the camt.056 been processed
    # first, cancelled the leg and refused the pacs.009): either way nothing moved.
    assert world.gateway_pvp(pvp_id)["legs"][0]["state"] in ("released", "cancelled")
    assert balances(world, wallet) == before
    world.assert_conserved()


@pytest.mark.parametrize("late", ["FX", "DT"])
def test_deadline_passes_before_the_second_lock(world: PvPProcesses, late: str) -> None:
    wallet = dt_wallet(world, 5_000_00)
    before = balances(world, wallet)
    pvp_id = new_pvp_id()
    late_network = FX_NETWORK if late == "FX" else GATEWAY_BIC
    # Held until after the connector aborted at deadline - margin.
    fault(
        world,
        kind="delay",
        pvp_id=pvp_id,
        message_type="pacs.009",
        destination_bic=late_network,
        delay_ms=int(DEADLINE_SECONDS * 1000) + 2000,
    )
    world.trade(kzt=3_000_00, aed=2_00, dt_wallet=wallet, pvp_id=pvp_id, seconds=DEADLINE_SECONDS)

    view = world.wait_final(pvp_id)

    assert view["decision"]["decision"] == "ABORT" and view["decision"]["reason"] == "TMOT"
    world.assert_atomic(pvp_id)
    # The late pacs.009 still arrives, after the camt.056: it must not lock anything.
    wait_for(
        "the late pacs.009 to be answered",
        lambda: any(
            m["direction"] == "out" and m["message"].startswith("pacs.009")
            for m in world.connector_messages(pvp_id)
            if m["peer_bic"] == late_network
        ),
    )
    gw_state = "cancelled" if late == "DT" else "released"
    world.wait_gateway_leg(pvp_id, gw_state)
    if late == "DT":  # the tombstone refuses the late pacs.009
        wait_for(
            "the gateway's RJCT DS02",
            lambda: ("RJCT", "DS02") in statuses(world.from_gateway(pvp_id, "pacs.002")),
        )
    world.wait_final(pvp_id)
    assert balances(world, wallet) == before
    world.assert_conserved()


def test_duplicated_messages_move_money_once(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 5_000_00)
    before = balances(world, wallet)
    pvp_id = new_pvp_id()
    fault(world, kind="duplicate", pvp_id=pvp_id)  # every message, to both networks, twice
    world.trade(kzt=1_000_00, aed=1_00, dt_wallet=wallet, pvp_id=pvp_id)

    world.wait_final(pvp_id)

    assert world.assert_atomic(pvp_id) == "COMMIT"
    after = balances(world, wallet)
    assert after["dt_payer"] == before["dt_payer"] - 1_000_00
    assert after["aed_receiver"] == before["aed_receiver"] + 1_00
    world.assert_conserved()


def test_replayed_messages_in_any_order_change_nothing(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 5_000_00)
    pvp_id = world.trade(kzt=1_000_00, aed=1_00, dt_wallet=wallet)
    world.wait_final(pvp_id)
    before = balances(world, wallet)
    trail = world.gateway_pvp(pvp_id)["messages"]
    sent = [
        m["xml"].encode()
        for m in world.connector_messages(pvp_id)
        if m["direction"] == "out" and m["peer_bic"] == GATEWAY_BIC
    ]
    assert len(sent) >= 2  # the pacs.009 and the fulfilment

    for raw in [*reversed(sent), *sent]:  # the fulfilment before the pacs.009, and again
        resp = world.post_to_gateway(raw)
        assert resp.status_code == 202 and resp.json()["duplicate"] is True, resp.text

    assert balances(world, wallet) == before
    gw = world.gateway_pvp(pvp_id)
    assert gw["messages"] == trail and gw["legs"][0]["state"] == "settled"
    world.assert_conserved()


def test_reordered_messages_between_concurrent_pvps(world: PvPProcesses) -> None:
    wallets = [dt_wallet(world, 1_000_00) for _ in range(6)]
    fault(world, kind="reorder", probability=0.5, count=8, destination_bic=GATEWAY_BIC)
    fault(world, kind="reorder", probability=0.5, count=8, destination_bic=FX_NETWORK)
    ids = [world.trade(kzt=500_00, aed=50, dt_wallet=w) for w in wallets]

    world.wait_all_final(ids)

    for pvp_id in ids:
        assert world.assert_atomic(pvp_id) == "COMMIT"
    assert all(world.wallet(w)["posted"] == 500_00 for w in wallets)
    world.assert_conserved()


def test_fulfilment_that_does_not_match_the_condition_changes_nothing(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 5_000_00)
    pvp_id = new_pvp_id()
    hold_decisions(world, pvp_id, ms=2500)
    world.trade(kzt=1_500_00, aed=1_50, dt_wallet=wallet, pvp_id=pvp_id)
    world.wait_gateway_leg(pvp_id, "locked")
    original = world.dt_original(pvp_id)
    wrong = secrets.token_bytes(32)
    # The message is self-consistent (Cond = SHA-256(Flfmt)), but not the leg's condition.
    forged = Pacs002(
        "FAKE" + uuid.uuid4().hex[:20],
        datetime.now(UTC),
        (
            TransactionStatus(
                original,
                "ACSP",
                pvp=PvPTerms(pvp_id, "DT", hashlib.sha256(wrong).hexdigest(), wrong.hex()),
            ),
        ),
    )
    assert world.send_as_connector(forged).status_code == 202

    wait_for(
        "the gateway's RJCT CH16",
        lambda: ("RJCT", "CH16") in statuses(world.from_gateway(pvp_id, "pacs.002")),
    )
    leg = world.gateway_pvp(pvp_id)["legs"][0]
    assert leg["state"] == "locked"
    assert world.wallet(wallet)["reserved"] == 1_500_00
    # The real fulfilment, held back until now, settles it.
    world.wait_final(pvp_id)
    assert world.assert_atomic(pvp_id) == "COMMIT"
    assert world.wallet(wallet)["posted"] == 3_500_00
    world.assert_conserved()


def test_camt056_after_settlement_is_refused(world: PvPProcesses) -> None:
    wallet = dt_wallet(world, 5_000_00)
    pvp_id = world.trade(kzt=2_500_00, aed=2_50, dt_wallet=wallet)
    world.wait_final(pvp_id)
    before = balances(world, wallet)
    request = CancellationRequest(
        "CXL" + uuid.uuid4().hex[:16],
        world.dt_original(pvp_id),
        Money(2_500_00, "KZT"),
        reason="TMOT",
    )
    camt056 = Camt056(
        "FAKE" + uuid.uuid4().hex[:20],
        CONNECTOR_BIC,
        GATEWAY_BIC,
        datetime.now(UTC),
        (request,),
    )
    assert world.send_as_connector(camt056).status_code == 202

    def answered() -> list[Camt029]:
        return [m for m in world.from_gateway(pvp_id, "camt.029") if isinstance(m, Camt029)]

    (answer,) = wait_for("the gateway's camt.029", answered)
    (resolution,) = answer.transactions
    assert resolution.status == "RJCR" and resolution.reason == "ARDT"
    assert world.gateway_pvp(pvp_id)["legs"][0]["state"] == "settled"
    assert balances(world, wallet) == before
    world.assert_conserved()


def _ask_status(world: PvPProcesses, pvp_id: str) -> None:
    req = Pacs028(
        "FAKE" + uuid.uuid4().hex[:20],
        datetime.now(UTC),
        (StatusRequest(world.dt_original(pvp_id)),),
    )
    assert world.send_as_connector(req).status_code == 202


def _wait_answer(
    world: PvPProcesses, pvp_id: str, expected: tuple[str, str | None], n: int
) -> None:
    """The ``n``-th pacs.002 the gateway sent for this PvP has ``expected`` status."""

    def probe() -> list[tuple[str, str | None]] | None:
        got = statuses(world.from_gateway(pvp_id, "pacs.002"))
        return got if len(got) >= n else None

    got = wait_for(f"pacs.002 #{n}", probe)
    assert got[n - 1] == expected, got


def test_pacs028_answered_at_every_stage(world: PvPProcesses) -> None:
    # locked (decision held back) -> ACSP; settled -> ACSC
    wallet = dt_wallet(world, 5_000_00)
    pvp_id = new_pvp_id()
    hold_decisions(world, pvp_id, ms=2000)
    world.trade(kzt=1_000_00, aed=1_00, dt_wallet=wallet, pvp_id=pvp_id)
    world.wait_gateway_leg(pvp_id, "locked")
    _wait_answer(world, pvp_id, ("ACSP", None), 1)  # the answer to the pacs.009
    _ask_status(world, pvp_id)
    _wait_answer(world, pvp_id, ("ACSP", None), 2)
    world.wait_final(pvp_id)
    _ask_status(world, pvp_id)
    _wait_answer(world, pvp_id, ("ACSC", None), 4)  # after the ACSC of the fulfilment

    # rejected -> RJCT + the ledger's reason
    poor = dt_wallet(world, 10)
    rejected = world.trade(kzt=1_000_00, aed=1_00, dt_wallet=poor)
    world.wait_final(rejected)
    _ask_status(world, rejected)
    _wait_answer(world, rejected, ("RJCT", "AM04"), 2)

    # released (the foreign leg was refused) -> RJCT DS02
    released = new_pvp_id()
    fault(world, kind="reject", pvp_id=released, destination_bic=FX_NETWORK)
    world.trade(kzt=1_000_00, aed=1_00, dt_wallet=wallet, pvp_id=released)
    world.wait_final(released)
    world.wait_gateway_leg(released, "released")
    n = len(statuses(world.from_gateway(released, "pacs.002")))
    _ask_status(world, released)
    _wait_answer(world, released, ("RJCT", "DS02"), n + 1)
    for p in (pvp_id, rejected, released):
        world.assert_atomic(p)
    world.assert_conserved()


@pytest.mark.parametrize("decision", ["COMMIT", "ABORT"])
def test_gateway_asks_with_pacs028_when_the_decision_is_late(
    world: PvPProcesses, decision: str
) -> None:
    """The decision to the gateway is held back past the deadline: the gateway asks the
    connector (pacs.028) and acts on the answer instead of deciding on its own."""
    wallet = dt_wallet(world, 5_000_00)
    before = balances(world, wallet)
    pvp_id = new_pvp_id()
    # Only the first copy of the decision is held back; on an ABORT the connector may send the
    # camt.056 twice (decided on the foreign RJCT, then again on the DT leg's late ACSP).
    hold_decisions(world, pvp_id, ms=15_000, count=1 if decision == "COMMIT" else 2)
    if decision == "ABORT":
        fault(world, kind="reject", pvp_id=pvp_id, destination_bic=FX_NETWORK)
    world.trade(kzt=1_000_00, aed=1_00, dt_wallet=wallet, pvp_id=pvp_id, seconds=DEADLINE_SECONDS)
    world.wait_gateway_leg(pvp_id, "locked")

    state = "settled" if decision == "COMMIT" else "released"
    leg = world.wait_gateway_leg(pvp_id, state, timeout=12)["legs"][0]

    assert leg["status_requests"] >= 1
    assert world.from_gateway(pvp_id, "pacs.028")
    assert world.assert_atomic(world.wait_final(pvp_id)["pvp_id"]) == decision
    moved = 1_000_00 if decision == "COMMIT" else 0
    assert world.wallet(wallet)["posted"] == before["dt_payer"] - moved
    assert world.wallet(wallet)["reserved"] == 0
    world.assert_conserved()
