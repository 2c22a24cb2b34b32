"""A simulated bank answers in the transaction that sends to it (``sim_inline``): its leg is
locked when the trade is created and settled when the decision is taken, each message
recorded as delivered once; with a fault rule set, it is reached through its lane, where the
faults act."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.connector.fakenet import BIC as DT_BANK_BIC
from tests.integration.connector.support import Env

SIM = "CBAUAEAA"


def _lane_deliveries(env: Env) -> list[str]:
    """The message types delivered to the simulated bank through its lane, as they go (the
    delivery's watcher: ``Delivery.watch``)."""
    seen: list[str] = []

    def watcher(event: str, rows: Sequence[Any], detail: str) -> None:
        if event == "delivered" and detail == "sent":
            seen.extend(r.msg_def_id for r in rows if r.destination_bic == SIM)

    env.connector.delivery.watch(watcher)
    return seen


def _sim_rows(env: Env, pvp_id: str) -> list[Any]:
    with env.connector.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT msg_def_id, created_at, sent_at, attempts FROM outbox"
                    " WHERE pvp_id = :p AND destination_bic = :d ORDER BY id"
                ),
                {"p": pvp_id, "d": SIM},
            )
        )


def test_the_simulated_leg_is_locked_with_the_trade_and_settled_with_the_decision(
    env: Env,
) -> None:
    lanes = _lane_deliveries(env)
    pvp_id = env.trade(kzt=1000, aed=10)
    # Answered before the trade's 201: nothing waits for a lane.
    fx = next(leg for leg in env.pvp(pvp_id)["legs"] if leg["network_bic"] == SIM)
    assert fx["status"] == "locked"
    view = env.wait(pvp_id, lambda v: v["state"] == "settled")
    fx = next(leg for leg in view["legs"] if leg["network_bic"] == SIM)
    assert fx["status"] == "settled" and fx["acknowledged"]
    assert lanes == []
    rows = _sim_rows(env, pvp_id)
    assert [r.msg_def_id for r in rows] == ["pacs.009.001.08", "pacs.002.001.10"]
    assert all(r.sent_at == r.created_at and r.attempts == 1 for r in rows)
    # The trail reads as through a lane: each message to the bank, then its answer.
    trail = [
        (m["direction"], m["message"])
        for m in env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
        if m["peer_bic"] == SIM
    ]
    assert trail == [
        ("out", "pacs.009.001.08"),
        ("in", "pacs.002.001.10"),
        ("out", "pacs.002.001.10"),
        ("in", "pacs.002.001.10"),
    ]
    assert env.balance("HSBK-AED")["available"] == 10
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


@pytest.mark.parametrize("how", ["a fault rule", "the setting"])
def test_with_a_fault_rule_or_the_setting_off_the_bank_is_reached_through_its_lane(
    make_env: Callable[..., Env], how: str
) -> None:
    env = make_env(sim_inline=how != "the setting")
    if how == "a fault rule":
        rule = {"kind": "drop", "pvp_id": "PVP-NONE-SUCH"}  # matches nothing here
        assert env.http.post("/v1/faults", json=rule).status_code == 201
    lanes = _lane_deliveries(env)
    pvp_id = env.trade(kzt=1000, aed=10)
    env.wait(pvp_id, lambda v: v["state"] == "settled")
    assert lanes == ["pacs.009.001.08", "pacs.002.001.10"]  # the pacs.009 and the decision
    assert env.balance("HSBK-AED")["available"] == 10


def test_a_simulated_leg_the_payer_cannot_fund_is_refused_and_nothing_moves(
    env: Env,
) -> None:
    """Answered in the trade's transaction, a refusal aborts the PvP as through a lane."""
    lanes = _lane_deliveries(env)
    before = env.balance("EBIL-AED")
    pvp_id = env.trade(kzt=1000, aed=before["available"] + 1)
    view = env.wait(pvp_id, lambda v: v["state"] == "cancelled")
    assert view["decision"]["decision"] == "ABORT"
    fx = next(leg for leg in view["legs"] if leg["network_bic"] == SIM)
    assert fx["status"] == "rejected"
    assert lanes == []
    assert env.balance("EBIL-AED") == before
    # Never credited, the receiving account was never opened.
    assert env.http.get("/v1/sim/AED/accounts/HSBK-AED").status_code == 404
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


def _inbox(env: Env) -> list[Any]:
    with env.connector.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT sender_bic, msg_def_id, sha256, raw FROM inbox ORDER BY id")
            )
        )


def test_an_inbound_message_s_bytes_are_stored_once(env: Env) -> None:
    """A message about a PvP keeps its bytes in that PvP's log only (the inbox row keeps its
    id and hash, for deduplication); one about no PvP keeps them in its inbox row."""
    pvp_id = env.trade(kzt=1000, aed=10)
    env.wait(pvp_id, lambda v: v["state"] == "settled")
    rows = _inbox(env)
    assert {r.sender_bic for r in rows} == {DT_BANK_BIC, SIM}
    assert all(r.raw == b"" for r in rows)
    logged = {
        m["sha256"]: m["xml"].encode()
        for m in env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
        if m["direction"] == "in"
    }
    assert {r.sha256 for r in rows} <= set(logged)
    assert all(hashlib.sha256(xml).hexdigest() == sha for sha, xml in logged.items())

    assert env.dt.status_request_raw(str(uuid.uuid4())).status_code == 202
    [about_nothing] = _inbox(env)[len(rows) :]
    assert about_nothing.msg_def_id == "pacs.028.001.03"
    assert hashlib.sha256(about_nothing.raw).hexdigest() == about_nothing.sha256
