"""A participant bank instructs through the gateway (``POST /v1/pvp``); the gateway on
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.pvp.harness import (
    AED_RECEIVER,
    CB_WALLET,
    DT_BANK,
    DT_WALLET,
    FX_BANK,
    PvPProcesses,
    wait_for,
)


def test_participant_instruction_matched_by_auto_counter_instruction(
    make_world: Callable[..., PvPProcesses],
) -> None:
    """HSBK instructs at its gateway; the connector files EBIL's mirror instruction
    (``auto_counter_instruct``); the PvP settles and the instruction follows its DT leg."""
    _instruct_and_settle(make_world(), "hsbk-e2e-0001")


def _instruct_and_settle(world: PvPProcesses, instruction_id: str) -> None:
    body = {
        "instruction_id": instruction_id,
        "party_bic": DT_BANK,
        "counterparty_bic": FX_BANK,
        "sell": {"currency": "KZT", "amount": 2_000_00, "account": DT_WALLET},
        "buy": {"currency": "AED", "amount": 1_60, "account": AED_RECEIVER},
        "value_time": (datetime.now(UTC) + timedelta(seconds=8)).isoformat(),
    }
    before = world.wallet(DT_WALLET)["posted"]
    created = world.participant.post("/v1/pvp", json=body)
    assert created.status_code == 201, created.text
    again = world.participant.post("/v1/pvp", json=body)
    assert again.status_code == 200  # idempotent by instruction id

    def settled() -> dict[str, Any] | None:
        view = world.participant.get(f"/v1/pvp/{instruction_id}").json()
        inst = view.get("instruction") or {}
        return view if inst.get("state") in ("settled", "failed") else None

    view = wait_for("the instruction to settle", settled)
    assert view["instruction"]["state"] == "settled", view
    pvp_id = view["pvp_id"] or view["instruction"]["pvp_id"]
    assert world.assert_atomic(world.wait_final(pvp_id)["pvp_id"]) == "COMMIT"
    assert world.dt_leg(pvp_id)["end_to_end_id"] == instruction_id
    assert world.wallet(DT_WALLET)["posted"] == before - 2_000_00
    assert world.wallet(CB_WALLET)["posted"] == 2_000_00
    assert world.aed(AED_RECEIVER)["available"] == 1_60
    world.assert_conserved()


@pytest.mark.postgres
class TestGatewayOnPostgreSQL:
    @pytest.fixture
    def world(
        self, make_world: Callable[..., PvPProcesses], pg_database_factory: Callable[[], str]
    ) -> PvPProcesses:
        return make_world(gateway_db_url=pg_database_factory())

    def test_settles_and_aborts_atomically(self, world: PvPProcesses) -> None:
        before = world.wallet(DT_WALLET)["posted"]
        ok = world.trade(kzt=7_000_00, aed=5_60)
        too_much = world.trade(kzt=before + 1, aed=1_00)
        views = world.wait_all_final([ok, too_much])

        assert world.assert_atomic(ok) == "COMMIT"
        assert world.assert_atomic(too_much) == "ABORT"
        assert views[too_much]["decision"]["reason"] == "AM04"
        assert world.wallet(DT_WALLET)["posted"] == before - 7_000_00
        assert world.wallet(DT_WALLET)["reserved"] == 0
        assert world.aed(AED_RECEIVER)["available"] == 5_60
        world.assert_conserved()

    def test_an_instruction_follows_its_dt_leg(self, world: PvPProcesses) -> None:
        """On PostgreSQL the instruction is locked and read with the legs a message names
        (``gateway.pvp.pgstore``): it still follows the pacs.009 and the decision."""
        _instruct_and_settle(world, "hsbk-e2e-pg-0001")
