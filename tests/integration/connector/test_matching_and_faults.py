"""Instructions and matching; fault injection; message authentication."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from gateway.connector.keys import generate_identity
from gateway.iso20022 import parse
from tests.integration.connector.fakenet import BIC, FakeNetwork
from tests.integration.connector.support import DEADLINE_S, DT_BANK, FX_BANK, Env
from tests.support.commits import commits_on_this_thread


def _instruction(
    iid: str,
    party: str,
    counterparty: str,
    sell: tuple[str, int, str],
    buy: tuple[str, int, str],
    value_time: datetime,
) -> dict[str, Any]:
    return {
        "instruction_id": iid,
        "party_bic": party,
        "counterparty_bic": counterparty,
        "sell": {"currency": sell[0], "amount": sell[1], "account": sell[2]},
        "buy": {"currency": buy[0], "amount": buy[1], "account": buy[2]},
        "value_time": value_time.isoformat(),
    }


def _token(env: Env, bic: str, currency: str) -> httpx.Client:
    r = env.http.post("/v1/participants", json={"bic": bic, "currency": currency})
    assert r.status_code == 201, r.text
    return httpx.Client(
        base_url=env.url, headers={"Authorization": f"Bearer {r.json()['token']}"}, timeout=10
    )


def test_agreeing_instructions_match_and_settle(env: Env) -> None:
    t = datetime.now(UTC) + timedelta(seconds=DEADLINE_S)
    dt, fx = _token(env, DT_BANK, "KZT"), _token(env, FX_BANK, "AED")
    assert dt.post("/v1/instructions", json={}).status_code == 400
    assert httpx.post(env.url + "/v1/instructions", json={}).status_code == 401
    mine = _instruction(
        "hsbk-1", DT_BANK, FX_BANK, ("KZT", 5000, "hsbk-dt"), ("AED", 40, "HSBK-AED"), t
    )
    r = dt.post("/v1/instructions", json=mine)
    assert r.status_code == 201 and r.json()["status"] == "open"
    # Same id, same body: the same answer; another body: refused.
    assert dt.post("/v1/instructions", json=mine).status_code == 200
    assert (
        dt.post(
            "/v1/instructions", json={**mine, "value_time": t.replace(year=t.year + 1).isoformat()}
        ).status_code
        == 409
    )
    # Disagreeing amount: no match. Value time outside the window: no match.
    wrong = _instruction(
        "ebil-0", FX_BANK, DT_BANK, ("AED", 41, "EBIL-AED"), ("KZT", 5000, "ebil-dt"), t
    )
    assert fx.post("/v1/instructions", json=wrong).json()["status"] == "open"
    late = _instruction(
        "ebil-1",
        FX_BANK,
        DT_BANK,
        ("AED", 40, "EBIL-AED"),
        ("KZT", 5000, "ebil-dt"),
        t + timedelta(seconds=61),
    )
    assert fx.post("/v1/instructions", json=late).json()["status"] == "open"
    # The mirror within the window matches.
    good = _instruction(
        "ebil-2",
        FX_BANK,
        DT_BANK,
        ("AED", 40, "EBIL-AED"),
        ("KZT", 5000, "ebil-dt"),
        t + timedelta(seconds=2),
    )
    r = fx.post("/v1/instructions", json=good)
    assert r.status_code == 201 and r.json()["status"] == "matched"
    pvp_id = r.json()["pvp_id"]
    view = env.wait(pvp_id, lambda v: v["state"] == "settled")
    legs = {leg["leg"]: leg for leg in view["legs"]}
    assert legs["DT"]["end_to_end_id"] == "hsbk-1"
    assert legs["DT"]["creditor_account"] == "ebil-dt"
    assert legs["FX"]["creditor_account"] == "HSBK-AED"
    assert env.balance("HSBK-AED")["available"] == 40
    names = [p["bic"] for p in env.http.get("/v1/participants").json()]
    assert {DT_BANK, FX_BANK, "NBKZKZKAXXX"} <= set(names)


def test_a_simulated_counterparty_instructs_by_itself(make_env: Callable[..., Env]) -> None:
    env = make_env(auto_counter_instruct={FX_BANK: {"AED": "EBIL-AED", "KZT": "ebil-dt"}})
    dt = _token(env, DT_BANK, "KZT")
    t = datetime.now(UTC) + timedelta(seconds=DEADLINE_S)
    r = dt.post(
        "/v1/instructions",
        json=_instruction(
            "hsbk-9", DT_BANK, FX_BANK, ("KZT", 700, "hsbk-dt"), ("AED", 7, "HSBK-AED"), t
        ),
    )
    assert r.json()["status"] == "matched"
    env.wait(r.json()["pvp_id"], lambda v: v["state"] == "settled")
    assert env.balance("HSBK-AED")["available"] == 7


def test_dropped_messages_are_retried_and_duplicates_processed_once(env: Env) -> None:
    r = env.http.post("/v1/faults", json={"kind": "drop", "message_type": "pacs.009", "count": 2})
    assert r.status_code == 201
    env.http.post("/v1/faults", json={"kind": "duplicate", "destination_bic": "NBKZKZKAXXX"})
    env.http.post("/v1/faults", json={"kind": "duplicate", "destination_bic": "CBAUAEAA"})
    assert env.http.post("/v1/faults", json={"kind": "nonsense"}).status_code == 400
    pvp_id = env.trade()
    view = env.wait(pvp_id, lambda v: v["state"] == "settled")
    assert view["decision"]["decision"] == "COMMIT"
    assert env.http.get("/v1/faults").json()[0]["fired"] == 2
    assert env.dt.duplicates >= 2  # the pacs.009 and the fulfilment came twice
    assert len(env.dt.of_type("pacs.009")) == 1
    assert env.balance("HSBK-AED")["available"] == 800  # the simulated bank settled once
    assert env.http.get("/v1/sim/AED/check").json()["ok"]
    assert env.http.delete("/v1/faults").status_code == 204
    assert env.http.get("/v1/faults").json() == []


def test_reordered_and_delayed_messages_still_settle_once(env: Env) -> None:
    env.http.post("/v1/faults", json={"kind": "reorder", "count": 3})
    env.http.post("/v1/faults", json={"kind": "delay", "delay_ms": 100, "count": 2})
    ids = [env.trade(kzt=1000 + i, aed=10 + i) for i in range(3)]
    for pvp_id in ids:
        assert env.wait(pvp_id, lambda v: v["state"] == "settled")["decision"]["decision"] == (
            "COMMIT"
        )
    assert env.balance("HSBK-AED")["available"] == 10 + 11 + 12
    # A network re-sending the same bytes gets the same acknowledgement, marked duplicate.
    inbound = [
        m
        for m in env.connector.pvp_messages(ids[0])
        if m["direction"] == "in" and m["peer_bic"] == "NBKZKZKAXXX"
    ]
    raw = inbound[0]["xml"].encode()
    r = httpx.post(
        env.url + "/iso20022/messages", content=raw, headers={"Content-Type": "application/xml"}
    )
    assert r.status_code == 202 and r.json()["duplicate"] is True


def test_a_rejected_simulated_leg_aborts(env: Env) -> None:
    env.http.post("/v1/faults", json={"kind": "reject", "reason": "AC01", "count": 1})
    pvp_id = env.trade()
    view = env.wait(pvp_id, lambda v: v["state"] == "cancelled")
    assert view["decision"]["reason"] == "AC01"
    assert env.balance("EBIL-AED")["held"] == 0


def test_unsigned_or_foreign_signed_messages_are_refused(env: Env) -> None:
    impostor = FakeNetwork(connector_url=env.url, connector_cert="")
    impostor.key_pem, impostor.cert_pem = generate_identity("impostor")
    try:
        r = impostor.status_request_raw("0f7c6b1e-1d2c-4b8a-9f3e-2a1b3c4d5e6f")
    finally:
        impostor.close()
    assert r.status_code == 400
    admi = parse(r.content, cert_pem=env.http.get("/v1/certificate").json()["certificate_pem"])
    assert admi.message.reason == "DS0B"  # type: ignore[union-attr]
    r = httpx.post(env.url + "/iso20022/messages", content=b"<nope/>")
    assert r.status_code == 400


def test_batched_mode_groups_legs_into_multi_transaction_messages(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(batch_max=4, batch_linger_ms=50)
    ids = [env.trade(kzt=100 + i, aed=1 + i) for i in range(6)]
    for pvp_id in ids:
        env.wait(pvp_id, lambda v: v["state"] == "settled")
    sizes = [len(m.transactions) for m in env.dt.of_type("pacs.009")]
    assert sum(sizes) == 6 and max(sizes) > 1
    assert env.balance("HSBK-AED")["available"] == sum(1 + i for i in range(6))
    # Each PvP's trail shows the whole batch messages, whose bytes are stored once.
    trails = {pvp_id: env.http.get(f"/v1/pvp/{pvp_id}/messages").json() for pvp_id in ids}
    for pvp_id, trail in trails.items():
        pacs009 = [m for m in trail if m["message"].startswith("pacs.009")]
        assert len(pacs009) == 2  # one per network, each possibly carrying other PvPs
        for m in trail:
            assert hashlib.sha256(m["xml"].encode()).hexdigest() == m["sha256"]
        assert any(pvp_id in m["xml"] for m in pacs009)
    shared = {m["sha256"] for t in trails.values() for m in t}
    logged = sum(len(t) for t in trails.values())
    with env.connector.engine.connect() as conn:
        bodies = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT sha256) FROM message_bodies")
        )
        n_bodies, n_distinct = bodies.one()
        inline = conn.execute(
            sa.text("SELECT count(*) FROM pvp_messages WHERE body_id IS NULL AND raw != x''")
        ).scalar_one()
    assert n_bodies == n_distinct > 0  # a batch's bytes once, whatever the number of PvPs
    assert n_bodies + inline >= len(shared) and n_bodies + inline < logged


def test_envelopes_posted_together_share_a_transaction_and_a_refused_one_spares_the_rest(
    env: Env,
) -> None:
    """The connector's reception takes what arrives together into one transaction, each
    message in a savepoint, and answers each for itself."""
    from gateway.iso20022 import build, header_for, sign_envelope

    pvp_ids = [env.trade(kzt=1000 + i, aed=10 + i) for i in range(3)]
    for pvp_id in pvp_ids:
        env.wait(pvp_id, lambda v: v["state"] == "settled")
    dt = env.dt
    uetrs = [leg["uetr"] for p in pvp_ids for leg in env.pvp(p)["legs"] if leg["leg"] == "DT"]

    def signed_status_request(uetr: str, msg_id: str, amount_note: str = "") -> bytes:
        from gateway.iso20022 import OriginalRef, Pacs028, StatusRequest

        leg = dt.legs[uetr]
        ref = OriginalRef(leg.msg_id, "pacs.009.001.08", leg.end_to_end_id, uetr)
        msg = Pacs028(
            msg_id, datetime.now(UTC), (StatusRequest(ref, request_id=msg_id + amount_note),)
        )
        raw = build(msg, header_for(msg, from_bic=BIC, to_bic="SWHQBEBBXXX"))
        return sign_envelope(raw, dt.key_pem, dt.cert_pem)

    first = signed_status_request(uetrs[0], "BATCH-1")
    raws = [
        first,
        signed_status_request(uetrs[1], "BATCH-2"),
        first.replace(b"<ds:SignatureValue>", b"<ds:SignatureValue>A", 1),  # bad signature
        signed_status_request(uetrs[2], "BATCH-1", "X"),  # an id already taken: DU01
        first,  # the same bytes again: a duplicate
    ]
    with commits_on_this_thread(env.connector.engine) as commits:
        answers = env.connector.receive_batch(raws)
    assert len(commits) == 1
    assert [a.status for a in answers] == [202, 202, 400, 400, 202]
    assert [a.body["duplicate"] for a in answers if a.status == 202] == [False, False, True]
    reasons = [parse(a.body).message.reason for a in answers if a.status == 400]  # type: ignore[union-attr]
    assert reasons == ["DS0B", "DU01"]


def test_the_connectors_door_refuses_what_is_not_a_posted_xml_body(env: Env) -> None:
    r = env.http.post("/iso20022/messages", content=b"<a/>", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert env.http.get("/iso20022/messages").status_code == 405
    paths = env.http.get("/schema/openapi.json").json()["paths"]
    assert "post" in paths["/iso20022/messages"]
