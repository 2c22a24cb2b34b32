"""A PvP's message trail (``GET /v1/pvp/{id}/messages``) is causal: every message comes after
the one that caused it. A decision after the statuses it was taken on, a network's answer to
a decision after the decision, the connector's answer to a ``pacs.028`` after the question;
with simulated banks answering in the sender's transaction and with a network over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.iso20022 import Camt029, Camt056, Pacs002, Pacs009, Pacs028, parse
from tests.integration.connector.support import DEADLINE_S, Env
from tests.support.waiting import wait_for


def _uetrs(msg: Any) -> list[str]:
    if isinstance(msg, Pacs009):
        return [tx.uetr for tx in msg.transactions]
    return [tx.original.uetr for tx in msg.transactions]


def assert_causal(trail: list[dict[str, Any]]) -> None:
    """Walk the trail in order; each message's cause must already be in it."""
    sent: set[tuple[str, str]] = set()  # (what, uetr) seen so far
    legs: set[str] = set()
    for entry in trail:
        msg = parse(entry["xml"].encode()).message
        where = f"#{entry['seq']} {entry['direction']} {entry['message']} {msg.id}"
        out = entry["direction"] == "out"
        for uetr in _uetrs(msg):
            if isinstance(msg, Pacs009):
                sent.add(("pacs009", uetr))
                legs.add(uetr)
            elif isinstance(msg, Pacs002) and out:
                [st] = [s for s in msg.transactions if s.original.uetr == uetr]
                if st.pvp is not None and st.pvp.fulfilment:
                    # COMMIT: taken on both legs' ACSP, so both are before it.
                    assert all(("acsp", u) in sent for u in legs), f"{where}: before an ACSP"
                    sent.add(("commit", uetr))
            elif isinstance(msg, Pacs002):
                [st] = [s for s in msg.transactions if s.original.uetr == uetr]
                assert ("pacs009", uetr) in sent, f"{where}: answers a pacs.009 not yet sent"
                if st.status in ("ACSP", "RJCT"):
                    sent.add(("acsp" if st.status == "ACSP" else "rjct", uetr))
                if st.status == "ACSC":
                    assert ("commit", uetr) in sent, f"{where}: ACSC before the COMMIT"
            elif isinstance(msg, Camt056):
                sent.add(("camt056", uetr))
            elif isinstance(msg, Camt029):
                assert ("camt056", uetr) in sent, f"{where}: camt.029 before the camt.056"


def _settled_by_both(env: Env, pvp_id: str) -> list[dict[str, Any]] | None:
    """The PvP's trail once it holds an inbound ACSC for each of its legs."""
    trail: list[dict[str, Any]] = env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
    inbound = [
        parse(entry["xml"].encode()).message for entry in trail if entry["direction"] == "in"
    ]
    settled = {
        st.original.uetr
        for msg in inbound
        if isinstance(msg, Pacs002)
        for st in msg.transactions
        if st.status == "ACSC"
    }
    return trail if len(settled) == len(env.pvp(pvp_id)["legs"]) else None


def _names(trail: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(m["direction"], m["message"][:8], m["peer_bic"]) for m in trail]


def test_trail_with_simulated_banks_lists_each_message_after_its_cause(
    make_env: Any,
) -> None:
    env: Env = make_env()
    value_time = (datetime.now(UTC) + timedelta(seconds=DEADLINE_S)).isoformat()
    body = {
        "value_time": value_time,
        "a": {"bic": "EBILAEAD", "currency": "AED", "amount": 800, "account": "EBIL-AED",
              "receive_account": "EBIL-CNY"},
        "b": {"bic": "ICBKCNBJ", "currency": "CNY", "amount": 1500, "account": "ICBK-CNY",
              "receive_account": "ICBK-AED"},
    }  # fmt: skip
    env.http.post("/v1/sim/CNY/accounts", json={"account": "ICBK-CNY", "amount": 10_000})
    r = env.http.post("/v1/trades", json=body)
    assert r.status_code == 201, r.text
    pvp_id = r.json()["pvp_id"]
    env.wait(pvp_id, lambda v: v["state"] == "settled")
    trail = env.http.get(f"/v1/pvp/{pvp_id}/messages").json()
    assert [m["seq"] for m in trail] == list(range(1, len(trail) + 1))
    assert_causal(trail)
    kinds = [(d, name) for d, name, _ in _names(trail)]
    decision = kinds.index(("out", "pacs.002"))
    assert kinds[:decision].count(("in", "pacs.002")) == 2  # both ACSP, then the decision


def test_trail_with_an_http_network_is_causal_for_commit_abort_and_status(env: Env) -> None:
    committed = env.trade()
    env.wait(committed, lambda v: v["state"] == "settled")
    env.dt.reject_reason = "AM04"
    aborted = env.trade()
    env.wait(aborted, lambda v: v["state"] == "cancelled")
    for pvp_id in (committed, aborted):
        assert_causal(env.http.get(f"/v1/pvp/{pvp_id}/messages").json())
    # The network asks for the status of a leg: the answer comes after the question.
    uetr = next(leg["uetr"] for leg in env.pvp(committed)["legs"] if leg["leg"] == "DT")
    # Settled is the connector's COMMIT; each bank's ACSC answers it a moment later.
    before = len(wait_for(lambda: _settled_by_both(env, committed), "both legs' ACSC"))
    assert env.dt.status_request(uetr).status_code == 202
    trail = env.http.get(f"/v1/pvp/{committed}/messages").json()
    since = [(m["direction"], m["message"][:8]) for m in trail[before:]]
    # The question, then its answer (stored in one transaction, before the 202). The answer
    # is the COMMIT with its fulfilment, which this network confirms with an ACSC again: that
    # may come back before the trail is read, and only after the answer.
    assert since[:2] == [("in", "pacs.028"), ("out", "pacs.002")], since
    assert set(since[2:]) <= {("in", "pacs.002")}, since
    assert isinstance(parse(trail[before]["xml"].encode()).message, Pacs028)
