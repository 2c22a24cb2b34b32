"""``POST /v1/trades/bulk``: many matched trades in one request and one transaction."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from tests.integration.connector.support import Env


def _new_id() -> str:
    return "PVPB" + uuid.uuid4().hex[:24]


def _missing(env: Env, pvp_id: str) -> bool:
    return env.http.get(f"/v1/pvp/{pvp_id}").status_code == 404


def test_a_bulk_of_trades_settles_every_one(env: Env) -> None:
    ids = [_new_id(), None, _new_id()]
    body = {
        "trades": [env.trade_body(kzt=1000 + i, aed=10 + i, pvp_id=p) for i, p in enumerate(ids)]
    }
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 201, r.text
    created = r.json()["pvp_ids"]
    assert len(created) == 3 and len(set(created)) == 3
    assert created[0] == ids[0] and created[2] == ids[2]
    for pvp_id in created:
        view = env.wait(pvp_id, lambda v: v["state"] == "settled")
        assert view["decision"]["decision"] == "COMMIT"
        assert {leg["leg"] for leg in view["legs"]} == {"DT", "FX"}
    assert env.balance("HSBK-AED")["available"] == 10 + 11 + 12
    assert env.http.get("/v1/sim/AED/check").json()["ok"]
    # Each PvP got its own pacs.009 to each network.
    assert len(env.dt.of_type("pacs.009")) == 3


def test_an_invalid_trade_in_the_middle_creates_nothing(env: Env) -> None:
    first, last = _new_id(), _new_id()
    bad = env.trade_body(pvp_id=_new_id())
    bad["a"]["amount"] = -5
    body = {"trades": [env.trade_body(pvp_id=first), bad, env.trade_body(pvp_id=last)]}
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("trades[1]: a.amount")
    assert _missing(env, first) and _missing(env, last)
    assert env.dt.of_type("pacs.009") == []


def test_a_pvp_id_that_exists_refuses_the_lot_as_the_single_endpoint_does(env: Env) -> None:
    existing = env.trade(pvp_id=_new_id())
    fresh = _new_id()
    body = {"trades": [env.trade_body(pvp_id=fresh), env.trade_body(pvp_id=existing)]}
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == f"trades[1]: PvP {existing} exists"
    assert _missing(env, fresh)
    # A retried request whose trades were created: 409 again, nothing created twice.
    body = {"trades": [env.trade_body(pvp_id=fresh)]}
    assert env.http.post("/v1/trades/bulk", json=body).status_code == 201
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == f"trades[0]: PvP {fresh} exists"
    # The same id twice in one request is refused as invalid.
    twice = _new_id()
    body = {"trades": [env.trade_body(pvp_id=twice), env.trade_body(pvp_id=twice)]}
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 400, r.text
    assert "trades[1]" in r.json()["detail"]
    assert _missing(env, twice)


def test_the_bulk_body_is_checked(env: Env) -> None:
    for body in ({}, {"trades": []}, {"trades": {}}, [env.trade_body()]):
        r = env.http.post("/v1/trades/bulk", json=body)
        assert r.status_code == 400, (body, r.text)
    r = env.http.post("/v1/trades/bulk", json={"trades": [env.trade_body()] * 1001})
    assert r.status_code == 400
    assert "1000" in r.json()["detail"]


def test_deliveries_to_a_simulated_bank_share_transactions_and_one_failure_spares_the_rest(
    env: Env,
) -> None:
    """Rows queued together for the simulated bank go in one transaction, each in its own
    savepoint: faults still apply per row, a row whose handling fails is undone alone and
    delivered again, and everything settles exactly once.

    The batches are seen through the delivery's watcher; the one failure is the simulated
    bank's handling replaced to fail once (no fault rule makes the bank's handling fail)."""
    conn = env.connector
    sizes: list[int] = []
    batched: set[bytes] = set()  # the payloads of rows delivered in a batch

    def watcher(event: str, rows: Sequence[Any], _detail: str) -> None:
        if event == "batch":
            sizes.append(len(rows))
            batched.update(r.payload for r in rows)

    conn.delivery.watch(watcher)
    handle = conn.sim.handle
    failed: list[bool] = []

    def fails_once(raw: bytes, bic: str, conn: Any = None, **kw: Any) -> Any:
        in_batch = raw in batched
        if not failed and in_batch and b"pacs.009" in raw:
            failed.append(in_batch)
            raise RuntimeError("simulated bank down for one message")
        return handle(raw, bic, conn=conn, **kw)

    conn.sim.handle = fails_once  # type: ignore[method-assign]
    env.http.post("/v1/faults", json={"kind": "duplicate", "destination_bic": "CBAUAEAA"})
    n = 40
    body = {"trades": [env.trade_body(kzt=1000 + i, aed=10 + i) for i in range(n)]}
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 201, r.text
    for pvp_id in r.json()["pvp_ids"]:
        view = env.wait(pvp_id, lambda v: v["state"] == "settled")
        assert view["decision"]["decision"] == "COMMIT"
    assert failed == [True]  # one delivery failed inside a batch, and was delivered again
    assert sizes and max(sizes) > 1
    assert env.balance("HSBK-AED")["available"] == sum(10 + i for i in range(n))
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


def test_the_simulated_bank_takes_messages_as_built_and_parses_what_it_was_not_handed(
    make_env: Callable[..., Env], monkeypatch: Any
) -> None:
    """Through its lane, the bank is handed the message its envelope was built from; a row it
    was not handed (as after a restart) is parsed from its bytes, with the same outcome."""
    from gateway.connector import sim

    env = make_env(sim_inline=False)

    parsed: list[bytes] = []
    real_parse = sim.parse

    def counting_parse(raw: bytes, *args: Any, **kw: Any) -> Any:
        parsed.append(raw)
        return real_parse(raw, *args, **kw)

    monkeypatch.setattr(sim, "parse", counting_parse)
    first = env.trade(kzt=1000, aed=10)
    env.wait(first, lambda v: v["state"] == "settled")
    assert parsed == []
    # Nothing handed over: every message to the bank is parsed back, and settles the same.
    monkeypatch.setattr(env.connector.outbox, "_built", _Forgets())
    second = env.trade(kzt=1001, aed=11)
    env.wait(second, lambda v: v["state"] == "settled")
    names = [raw.split(b"<MsgDefIdr>")[1].split(b"<")[0] for raw in parsed]
    assert names == [b"pacs.009.001.08", b"pacs.002.001.10"]
    assert env.balance("HSBK-AED")["available"] == 10 + 11
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


class _Forgets(OrderedDict[str, Any]):
    """Keeps nothing: as after a restart, no built message is at hand at delivery."""

    def __setitem__(self, key: str, value: Any) -> None:
        return None
