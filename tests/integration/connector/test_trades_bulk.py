"""``POST /v1/trades/bulk``: many matched trades in one request and one transaction, on each
database (on PostgreSQL a transaction's writes are held back and sent as one statement,
``gateway.connector.pgwrites``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from gateway.connector import store
from gateway.connector.faults import FaultRule
from tests.integration.connector.support import Env


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_on_each(
    request: pytest.FixtureRequest, make_env: Callable[..., Env]
) -> Callable[..., Env]:
    """``make_env`` on SQLite, then on a fresh PostgreSQL database."""

    def make(**connector: Any) -> Env:
        if request.param == "postgresql":
            connector["database_url"] = request.getfixturevalue("pg_database_factory")()
        return make_env(**connector)

    return make


@pytest.fixture
def env(make_on_each: Callable[..., Env]) -> Env:
    return make_on_each()


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

    The batches are seen through the delivery's watcher; the failure is an ``outage`` fault
    rule set, as a batch starts, on one of its pacs.009 after its first row: the bank fails
    once it has handled that message (locked its leg)."""
    conn = env.connector
    sizes: list[int] = []
    outcomes: dict[int, list[str]] = {}  # by row id, its deliveries' outcomes in order
    failing: list[Any] = []  # the row the outage is set on, within its batch

    def watcher(event: str, rows: Sequence[Any], detail: str) -> None:
        if event == "batch":
            sizes.append(len(rows))
            later = [r for r in rows[1:] if r.msg_def_id.startswith("pacs.009")]
            if not failing and later:
                row = later[len(later) // 2]
                failing.append((row, [r.id for r in rows]))
                rule = {"kind": "outage", "count": 1, "pvp_id": row.pvp_id}
                rule |= {"message_type": row.msg_def_id, "destination_bic": row.destination_bic}
                conn.faults.add(FaultRule(**rule))
        elif event == "delivered":
            outcomes.setdefault(rows[0].id, []).append(detail)

    conn.delivery.watch(watcher)
    env.http.post("/v1/faults", json={"kind": "duplicate", "destination_bic": "CBAUAEAA"})
    n = 40
    body = {"trades": [env.trade_body(kzt=1000 + i, aed=10 + i) for i in range(n)]}
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 201, r.text
    for pvp_id in r.json()["pvp_ids"]:
        view = env.wait(pvp_id, lambda v: v["state"] == "settled")
        assert view["decision"]["decision"] == "COMMIT"
    assert sizes and max(sizes) > 1
    [(row, batch)] = failing
    [outage] = [rule for rule in env.http.get("/v1/faults").json() if rule["kind"] == "outage"]
    assert outage["fired"] == 1
    # That row failed in its batch, and was delivered again; the rest of the batch went.
    assert outcomes[row.id][0] == "retry" and outcomes[row.id][-1] == "sent"
    assert all(outcomes[other][0] == "sent" for other in batch if other != row.id)
    assert env.balance("HSBK-AED")["available"] == sum(10 + i for i in range(n))
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


def test_an_outage_of_the_simulated_bank_undoes_its_handling_and_the_message_goes_again(
    env: Env,
) -> None:
    """The bank fails twice after locking the leg of a pacs.009: each time the lock is undone
    with the delivery's transaction, and the third delivery settles the PvP once."""
    rule = {"kind": "outage", "message_type": "pacs.009", "destination_bic": "CBAUAEAA"}
    r = env.http.post("/v1/faults", json={**rule, "count": 2})
    assert r.status_code == 201, r.text
    pvp_id = env.trade(kzt=1000, aed=10)
    view = env.wait(pvp_id, lambda v: v["state"] == "settled")
    assert view["decision"]["decision"] == "COMMIT"
    [outage] = env.http.get("/v1/faults").json()
    assert (outage["fired"], outage["count"]) == (2, 0)
    assert env.balance("HSBK-AED")["available"] == 10
    assert env.balance("EBIL-AED")["held"] == 0
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


def test_the_simulated_bank_takes_messages_as_built_and_parses_what_it_was_not_handed(
    make_on_each: Callable[..., Env],
) -> None:
    """Through its lane, the bank is handed the message its envelope was built from; a row it
    was not handed (as after a restart: the outbox keeps no built message) is parsed from its
    bytes, with the same outcome."""
    env = make_on_each(sim_inline=False)
    sim = env.connector.sim
    first = env.trade(kzt=1000, aed=10)
    env.wait(first, lambda v: v["state"] == "settled")
    both = {"pacs.009.001.08": 1, "pacs.002.001.10": 1}
    assert sim.received() == {"built": both, "parsed": {}}
    # Nothing kept: every message to the bank is parsed back, and settles the same.
    env.connector.outbox.keep_built = 0
    second = env.trade(kzt=1001, aed=11)
    env.wait(second, lambda v: v["state"] == "settled")
    assert sim.received() == {"built": both, "parsed": both}
    assert env.balance("HSBK-AED")["available"] == 10 + 11
    assert env.http.get("/v1/sim/AED/check").json()["ok"]


def test_batched_trades_settle_with_one_message_per_batch_logged_for_each(
    make_on_each: Callable[..., Env],
) -> None:
    """Batched mode: a pacs.009 and a decision carry several PvPs; each PvP's log has them,
    in order, their bytes stored once."""
    env = make_on_each(batch_max=5, batch_linger_ms=20)
    n = 12
    body = {"trades": [env.trade_body(kzt=1000 + i, aed=10 + i) for i in range(n)]}
    r = env.http.post("/v1/trades/bulk", json=body)
    assert r.status_code == 201, r.text
    ids = r.json()["pvp_ids"]
    for pvp_id in ids:
        env.wait(pvp_id, lambda v: v["state"] == "settled")
    assert env.balance("HSBK-AED")["available"] == sum(10 + i for i in range(n))
    assert env.http.get("/v1/sim/AED/check").json()["ok"]
    assert len(env.dt.of_type("pacs.009")) < n  # several PvPs a message
    with store.reader(env.connector.engine) as conn:
        log = store.read_message_log(conn, ids[-1])
    shared = [m for m in log if m.body_id is not None]
    assert shared and all(m.raw for m in shared)
    assert [m.id for m in log] == sorted(m.id for m in log)
    out = [m.msg_def_id for m in log if m.direction == "out"]
    assert out.count("pacs.009.001.08") == 2  # one per network, then the decisions
