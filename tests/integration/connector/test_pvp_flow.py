"""Worked PvP scenarios: the connector with a fake DT network and a simulated AED bank."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.integration.connector.support import Env
from tests.support.waiting import wait_for


def _settled(v: dict) -> bool:  # type: ignore[type-arg]
    return bool(v["state"] == "settled")


def test_happy_path_commits_and_settles_both_legs(env: Env) -> None:
    pvp_id = env.trade(kzt=100_000, aed=800)
    view = env.wait(pvp_id, _settled)
    assert view["decision"]["decision"] == "COMMIT"
    assert {leg["leg"]: leg["status"] for leg in view["legs"]} == {"DT": "settled", "FX": "settled"}
    assert env.balance("EBIL-AED") == {
        "currency": "AED",
        "account": "EBIL-AED",
        "available": 999_200,
        "held": 0,
        "total": 999_200,
    }
    assert env.balance("HSBK-AED")["available"] == 800
    check = env.http.get("/v1/sim/AED/check").json()
    assert check["ok"] and check["issued"] == 1_000_000
    # The DT network got a pacs.009 and the fulfilment; the fulfilment matches the condition.
    [pacs009] = env.dt.of_type("pacs.009")
    assert pacs009.transactions[0].pvp.condition == view["condition"]
    fulfilments = [s for m in env.dt.of_type("pacs.002") for s in m.transactions]
    assert fulfilments and fulfilments[0].pvp.fulfilment
    # Every message, in order, raw.
    msgs = env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
    names = [(m["direction"], m["message"][:8]) for m in msgs]
    assert names[:2] == [("out", "pacs.009"), ("out", "pacs.009")]
    assert ("in", "pacs.002") in names
    assert all(m["xml"].startswith("<?xml") for m in msgs)
    # The decision never changes, and the store refuses to change it: a sweep (the one thing
    # that decides on its own) leaves it as it was.
    env.connector.sweep()
    assert env.pvp(pvp_id)["decision"] == view["decision"]
    with pytest.raises(sa.exc.DBAPIError), env.connector.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE decisions SET decision='ABORT'")


def test_dt_leg_rejected_aborts_and_releases_the_simulated_lock(env: Env) -> None:
    env.dt.reject_reason = "AM04"
    pvp_id = env.trade()
    view = env.wait(pvp_id, lambda v: v["state"] == "cancelled")
    assert view["decision"]["decision"] == "ABORT"
    assert view["decision"]["reason"] == "AM04"
    legs = {leg["leg"]: leg for leg in view["legs"]}
    assert legs["DT"]["status"] == "rejected"
    assert legs["FX"]["status"] == "released"
    assert len(env.dt.of_type("camt.056")) == 1  # both networks got one: the DT one here
    assert env.balance("EBIL-AED") == {
        "currency": "AED",
        "account": "EBIL-AED",
        "available": 1_000_000,
        "held": 0,
        "total": 1_000_000,
    }
    assert env.http.get("/v1/sim/AED/check").json()["ok"]
    msgs = env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
    camt056 = [m for m in msgs if m["message"].startswith("camt.056")]
    assert {m["peer_bic"] for m in camt056} == {"NBKZKZKAXXX", "CBAUAEAA"}


def test_deadline_passing_before_the_second_acsp_aborts(env: Env) -> None:
    env.dt.silent = True
    pvp_id = env.trade(seconds=1.0)
    view = env.wait(pvp_id, lambda v: v["decision"] is not None, timeout=5)
    assert view["decision"]["decision"] == "ABORT"
    assert view["decision"]["reason"] == "TMOT"
    # A late ACSP after the abort: the connector cancels that leg again. The decision may
    # come before the pacs.009 reached the silent network (its delivery is not held for it).
    wait_for(lambda: len(env.dt.of_type("pacs.009")) == 1, "the pacs.009", timeout=5)
    [pacs009] = env.dt.of_type("pacs.009")
    before = len(env.dt.of_type("camt.056"))
    env.dt.answer_pacs009(pacs009)
    env.wait(pvp_id, lambda v: v["state"] == "cancelled")
    wait_for(
        lambda: len(env.dt.of_type("camt.056")) > before,
        "the late leg cancelled again",
        timeout=5,
        interval=0.02,
    )
    assert env.pvp(pvp_id)["decision"]["decision"] == "ABORT"
    assert env.balance("EBIL-AED")["held"] == 0


def test_legs_locked_only_after_deadline_minus_margin_abort_and_no_commit_is_sent(
    make_env: Callable[..., Env],
) -> None:
    # A margin wider than the time left to the deadline: deadline - margin has passed before
    # the trade exists, so both ACSPs (the simulated bank's and the DT network's) come after
    # it. The sweeper's period outlasts the test: only the ACSPs can decide until it runs.
    env = make_env(safety_margin_ms=60_000, sweep_interval_ms=3_600_000)
    pvp_id = env.trade(seconds=30)
    locked = env.wait(pvp_id, lambda v: all(leg["locked_at"] for leg in v["legs"]))
    # The second ACSP's transaction (which would have recorded a COMMIT) decided nothing.
    assert locked["decision"] is None, locked["decision"]
    assert {leg["status"] for leg in locked["legs"]} == {"locked"}

    env.connector.sweep()
    view = env.wait(pvp_id, lambda v: v["state"] == "cancelled")
    assert (view["decision"]["decision"], view["decision"]["reason"]) == ("ABORT", "TMOT")
    assert {leg["leg"]: leg["status"] for leg in view["legs"]} == {
        "DT": "released",
        "FX": "released",
    }
    # Cancelled is final and so is the decision: no COMMIT went out, and none ever will.
    assert not [s for m in env.dt.of_type("pacs.002") for s in m.transactions if s.pvp]
    msgs = env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
    sent = [(m["peer_bic"], m["message"][:8]) for m in msgs if m["direction"] == "out"]
    assert ("NBKZKZKAXXX", "camt.056") in sent and ("CBAUAEAA", "camt.056") in sent
    assert not [name for _, name in sent if name == "pacs.002"]
    dt_uetr = next(leg["uetr"] for leg in view["legs"] if leg["leg"] == "DT")
    assert env.dt.legs[dt_uetr].state == "released"
    assert env.balance("EBIL-AED") == {
        "currency": "AED",
        "account": "EBIL-AED",
        "available": 1_000_000,
        "held": 0,
        "total": 1_000_000,
    }
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


def _ask(env: Env, uetr: str):  # type: ignore[no-untyped-def]
    """Send a pacs.028 for ``uetr``; the next pacs.002 the fake receives is the answer."""
    before = len(env.dt.of_type("pacs.002"))
    assert env.dt.status_request(uetr).status_code == 202
    wait_for(lambda: len(env.dt.of_type("pacs.002")) > before, "the answer", timeout=5)
    [answer] = env.dt.of_type("pacs.002")[before].transactions
    assert answer.original.uetr == uetr
    return answer


def test_status_requests_at_every_stage(env: Env) -> None:
    env.dt.silent = True
    pvp_id = env.trade(seconds=30)
    wait_for(lambda: env.dt.legs, "the DT leg", timeout=5)
    [uetr] = list(env.dt.legs)
    # Undecided and in time: PDNG.
    assert _ask(env, uetr).status == "PDNG"
    # Undecided past the deadline (here: inside the margin): the connector decides ABORT right
    # then, answers RJCT and cancels the leg. The handlers' margin only: the sweeper looks for
    # overdue PvPs with the configured 300 ms, so it stays out of this one for 30 s.
    env.connector.handlers.margin = 60_000
    answer = _ask(env, uetr)
    assert (answer.status, answer.reason) == ("RJCT", "TMOT")
    view = env.pvp(pvp_id)
    assert view["decision"]["detail"].endswith("(asked by pacs.028)")
    wait_for(lambda: env.dt.of_type("camt.056"), "the leg cancelled", timeout=5)
    # Decided ABORT: RJCT again, and the leg is cancelled again.
    assert _ask(env, uetr).status == "RJCT"
    # After a COMMIT: ACSP with the fulfilment.
    env.connector.handlers.margin = 300
    env.dt.silent = False
    pvp2 = env.trade()
    env.wait(pvp2, _settled)
    uetr2 = next(leg["uetr"] for leg in env.pvp(pvp2)["legs"] if leg["leg"] == "DT")
    answer = _ask(env, uetr2)
    assert answer.status == "ACSP"
    assert answer.pvp.fulfilment


@pytest.mark.postgres
def test_happy_path_on_postgresql(
    make_env: Callable[..., Env], pg_database_factory: Callable[[], str]
) -> None:
    env = make_env(database_url=pg_database_factory())
    pvp_id = env.trade()
    assert env.wait(pvp_id, _settled)["decision"]["decision"] == "COMMIT"
    assert env.http.get("/v1/sim/AED/check").json()["ok"]
    with pytest.raises(sa.exc.DBAPIError), env.connector.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM decisions")


def test_reads_do_not_wait_for_a_writer(env: Env) -> None:
    pvp_id = env.trade()
    views: list[dict] = []  # type: ignore[type-arg]
    with env.connector.engine.begin() as conn:  # a writer that holds its lock a while
        conn.exec_driver_sql("UPDATE pvps SET state = state")
        reader = threading.Thread(target=lambda: views.append(env.connector.pvp_view(pvp_id)))
        reader.start()
        reader.join(timeout=5)
        assert not reader.is_alive(), "a read waited for the writer"
    assert views[0]["pvp_id"] == pvp_id
