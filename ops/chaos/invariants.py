"""After the storm: wait for the system to settle, then check what must hold, from the ground
truth of each party (the connector's PvPs and simulated bank, the gateway's ledger over HTTP and
``dt-gateway ledger check``, the chain's own logs, the public verifier), not from what the
clients were told. Each check gives ``{"ok": bool, ...}`` with the figures behind it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from web3 import Web3

from ops.chaos.load import Clients, Record
from ops.chaos.processes import BIN, ROOT, clean_env, run_cli
from ops.chaos.system import (
    AED_FUNDS,
    AED_PAYER,
    AED_RECEIVER,
    BANK_A,
    BANK_B,
    CB_WALLET,
    DT_WALLET,
    EXCHANGE_WALLET,
    FUNDS,
    SEGREGATED_WALLET,
    System,
)

FINAL = {"settled", "cancelled"}
Check = dict[str, Any]


def _pages(client: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        page = System.call(client, "GET", f"{path}?{httpx.QueryParams(params)}")
        items += page[key]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


class Truth:
    """What each party says, read once the system has settled."""

    def __init__(self, system: System, clients: Clients) -> None:
        self.system = system
        self.clients = clients
        start = int(system.deployed["DT_GATEWAY_STABLECOIN__START_BLOCK"])
        token = clients.token
        self.minted_events = token.events.Minted().get_logs(from_block=start)
        self.redeemed_events = token.events.Redeemed().get_logs(from_block=start)
        self.total_supply = int(token.functions.totalSupply().call())
        self.mints = _pages(system.exchange, "/v1/stablecoin/mints", "mints")
        self.redemptions = _pages(system.op, "/v1/stablecoin/redemptions", "redemptions")

    def wallet(self, wallet_id: str) -> dict[str, Any]:
        return dict(System.call(self.system.op, "GET", f"/v1/wallets/{wallet_id}"))

    def aed(self, account: str) -> dict[str, Any]:
        return dict(System.call(self.system.conn, "GET", f"/v1/sim/AED/accounts/{account}"))


# --- settling -----------------------------------------------------------------------------------


def settle(system: System, clients: Clients, record: Record, timeout: float) -> list[str]:
    """Wait until every PvP is final, every mint minted or refunded and every burn on the chain
    paid; returns what did not settle in ``timeout`` (empty: settled)."""
    _find_unresolved_trades(system, record)
    deadline = time.monotonic() + timeout
    waiting: list[str] = []
    for what, probe in (
        ("PvPs final", lambda: _pvps_pending(system, record)),
        ("mints final", lambda: _mints_pending(system)),
        ("burns paid", lambda: _burns_unpaid(system, clients)),
    ):
        left: Any = None
        while time.monotonic() < deadline:
            try:
                left = probe()
            except (httpx.HTTPError, RuntimeError, OSError) as exc:
                left = repr(exc)
            if not left:
                break
            time.sleep(0.3)
        if left:
            waiting.append(f"{what}: {str(left)[:300]}")
    return waiting


def _find_unresolved_trades(system: System, record: Record) -> None:
    """A trade whose answer was lost may exist: the connector knows."""
    for what in record.unresolved:
        if what.startswith("trade "):
            pvp_id = what.split()[1]
            resp = system.conn.get(f"/v1/pvp/{pvp_id}")
            if resp.status_code == 200:
                view = resp.json()
                legs = {leg["leg"]: leg for leg in view["legs"]}
                record.pvps[pvp_id] = (int(legs["DT"]["amount"]), int(legs["FX"]["amount"]))


def _pvps_pending(system: System, record: Record) -> list[str]:
    pending = []
    for pvp_id in record.pvps:
        if System.call(system.conn, "GET", f"/v1/pvp/{pvp_id}")["state"] not in FINAL:
            pending.append(pvp_id)
    return pending


def _mints_pending(system: System) -> list[str]:
    mints = _pages(system.exchange, "/v1/stablecoin/mints", "mints")
    return [f"{m['id']} {m['state']}" for m in mints if m["state"] not in ("minted", "refunded")]


def _burns_unpaid(system: System, clients: Clients) -> str:
    start = int(system.deployed["DT_GATEWAY_STABLECOIN__START_BLOCK"])
    burns = len(clients.token.events.Redeemed().get_logs(from_block=start))
    paid = len(_pages(system.op, "/v1/stablecoin/redemptions", "redemptions"))
    return "" if paid >= burns else f"{burns - paid} of {burns} burns not recorded"


# --- the invariants -----------------------------------------------------------------------------


def pvps_atomic(truth: Truth, record: Record) -> Check:
    """Every PvP: both legs settled (COMMIT) or neither (ABORT), at the connector, in its
    simulated AED bank and in the gateway's ledger; the DT and AED moved are exactly the
    committed PvPs' amounts."""
    system = truth.system
    broken: list[str] = []
    outcomes: Counter[str] = Counter()
    kzt = aed = 0
    for pvp_id, (amount, fx) in record.pvps.items():
        view = System.call(system.conn, "GET", f"/v1/pvp/{pvp_id}")
        decision = (view.get("decision") or {}).get("decision")
        outcomes[str(decision)] += 1
        legs = {leg["leg"]: leg for leg in view["legs"]}
        statuses = {leg["status"] for leg in legs.values()}
        resp = system.op.get(f"/v1/pvp/{legs['DT']['uetr']}")
        gateway = (
            {leg["state"] for leg in resp.json()["legs"]} if resp.status_code == 200 else set()
        )
        if decision == "COMMIT":
            kzt, aed = kzt + amount, aed + fx
            if view["state"] != "settled" or statuses != {"settled"} or gateway != {"settled"}:
                broken.append(f"{pvp_id} COMMIT: connector {statuses}, gateway {gateway}")
        elif decision == "ABORT":
            if "settled" in statuses or "settled" in gateway or view["state"] != "cancelled":
                broken.append(f"{pvp_id} ABORT: connector {statuses}, gateway {gateway}")
        else:
            broken.append(f"{pvp_id}: no decision ({view['state']})")
    balances = {
        DT_WALLET: (truth.wallet(DT_WALLET)["posted"], FUNDS[DT_WALLET] - kzt),
        CB_WALLET: (truth.wallet(CB_WALLET)["posted"], kzt),
        AED_PAYER: (truth.aed(AED_PAYER)["total"], AED_FUNDS - aed),
        AED_RECEIVER: (truth.aed(AED_RECEIVER)["total"], aed),
    }
    off = {k: {"is": v[0], "expected": v[1]} for k, v in balances.items() if v[0] != v[1]}
    return {
        "ok": not broken and not off,
        "pvps": len(record.pvps),
        "decisions": dict(outcomes),
        "broken": broken[:20],
        "balances_off": off,
    }


def dt_conserved(truth: Truth, record: Record) -> Check:
    """Both ledgers conserve money: the gateway's (recomputed from its rows by ``dt-gateway
    ledger check`` and by ``GET /v1/ledger/invariants``) and the simulated AED bank's; the two
    banks' wallets hold exactly what the acknowledged transfers and committed locks moved."""
    system = truth.system
    env = {**system.gateways[0].env}
    try:
        check = json.loads(run_cli(env, "ledger", "check"))
    except AssertionError as exc:  # exit 1: a violation
        check = {"ok": False, "error": str(exc)[:1000]}
    api = System.call(system.op, "GET", "/v1/ledger/invariants")
    sim = System.call(system.conn, "GET", "/v1/sim/AED/check")
    expected = {BANK_A: FUNDS[BANK_A], BANK_B: FUNDS[BANK_B]}
    for debit, credit, amount in record.ledger_ops.values():
        expected[debit] -= amount
        expected[credit] += amount
    banks = {}
    for wallet, want in expected.items():
        got = truth.wallet(wallet)
        if got["posted"] != want or got["reserved"] != 0:
            banks[wallet] = {"posted": got["posted"], "reserved": got["reserved"], "want": want}
    sim_ok = bool(sim.get("ok")) and sim.get("held") == 0 and sim.get("open_locks") == 0
    return {
        "ok": bool(check.get("ok")) and bool(api.get("ok")) and sim_ok and not banks,
        "ledger_check": check.get("ok"),
        "api_invariants": api.get("ok"),
        "aed_sim": sim,
        "ledger_ops": len(record.ledger_ops),
        "banks_off": banks,
    }


def supply_backed(truth: Truth, record: Record) -> Check:
    """The tokens in circulation never exceed the DT in the segregated wallet."""
    segregated = truth.wallet(SEGREGATED_WALLET)["posted"]
    return {
        "ok": truth.total_supply <= segregated,
        "total_supply": truth.total_supply,
        "segregated": segregated,
        "gap": segregated - truth.total_supply,
    }


def request_id(mint_id: str) -> str:
    return "0x" + hashlib.sha256(f"dt-gateway:mint:{mint_id}".encode()).hexdigest()


def mints_exactly_once(truth: Truth, record: Record) -> Check:
    """Every acknowledged mint exists once and ended minted (one ``Minted`` event with its
    request id, the DT in the segregated wallet) or refunded (no event, the DT back)."""
    by_key = Counter(m["idempotency_key"] for m in truth.mints)
    events = Counter(str(Web3.to_hex(e["args"]["requestId"])) for e in truth.minted_events)
    minted = {request_id(m["id"]): m for m in truth.mints if m["state"] == "minted"}
    refunded = {request_id(m["id"]) for m in truth.mints if m["state"] == "refunded"}
    problems = [f"key {k} x{n}" for k, n in by_key.items() if n > 1]
    problems += [f"acknowledged {k} missing" for k in record.mints if k not in by_key]
    final = ("minted", "refunded")
    problems += [f"{m['id']} {m['state']}" for m in truth.mints if m["state"] not in final]
    problems += [f"minted {rid} has {events[rid]} events" for rid in minted if events[rid] != 1]
    problems += [f"refunded {rid} was minted" for rid in refunded if events[rid]]
    problems += [f"event {rid} of no mint" for rid in events if rid not in minted]
    minted_dt = sum(m["amount"] for m in minted.values())
    paid = sum(r["amount"] for r in truth.redemptions if r["state"] == "paid")
    exchange = truth.wallet(EXCHANGE_WALLET)["posted"]
    if exchange != FUNDS[EXCHANGE_WALLET] - minted_dt + paid:
        problems.append(f"exchange wallet {exchange} != funded - minted + redeemed")
    return {
        "ok": not problems,
        "mints": len(truth.mints),
        "minted": len(minted),
        "refunded": len(refunded),
        "problems": problems[:20],
    }


def redemptions_exactly_once(truth: Truth, record: Record) -> Check:
    """Every burn on the chain is recorded once by the gateway and paid once, for its amount;
    the gateway records no burn the chain does not have."""
    chain = {
        (Web3.to_hex(e["transactionHash"]), int(e["logIndex"])): int(e["args"]["amount"])
        for e in truth.redeemed_events
    }
    seen = Counter((r["tx_hash"], r["log_index"]) for r in truth.redemptions)
    problems = [f"{k} recorded x{n}" for k, n in seen.items() if n > 1]
    problems += [f"{k} not on the chain" for k in seen if k not in chain]
    problems += [f"{k} not recorded" for k in chain if k not in seen]
    for r in truth.redemptions:
        key = (r["tx_hash"], r["log_index"])
        if r["state"] != "paid" or chain.get(key, r["amount"]) != r["amount"]:
            problems.append(f"{key}: {r['state']} {r['amount']}")
    return {
        "ok": not problems,
        "burns": len(chain),
        "burns_sent": len(record.redeem_txs),
        "burns_lost_with_the_node": record.lost_redeems,
        "problems": problems[:20],
    }


def collateral_verified(truth: Truth, record: Record) -> Check:
    """``dt-gateway verify-collateral``, as the public runs it, passes."""
    system = truth.system
    done = subprocess.run(
        [
            str(BIN),
            "verify-collateral",
            "--url",
            system.balancer.url,
            "--rpc",
            system.anvil.url,
            "--log-key",
            system.log_vkey,
            "--state",
            str(system.workdir / "verifier-state.json"),
            "--json",
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    try:
        verdict: Any = json.loads(last)
    except ValueError:
        verdict = (done.stdout + done.stderr)[-1000:]
    return {"ok": done.returncode == 0, "exit": done.returncode, "verdict": verdict}


UNAVAILABLE_WHILE_DOWN = {"anvil": {"CHAIN_UNAVAILABLE"}, "connector": {"CONNECTOR_UNAVAILABLE"}}
"""The 503s a client may see while a dependency is down: the gateway saying so, with a stable
code, is the documented answer (retry later), not a server error."""
OUTAGE_GRACE = 5.0
"""Seconds after a restart during which a 503 of that outage still counts as one (clients'
and the gateway's pooled connections notice the restart on their next use)."""


def no_server_errors(record: Record, kills: list[dict[str, Any]]) -> Check:
    """The clients never got a 5xx, but for a 503 naming a dependency while it was down (a
    dropped connection is not an answer: it is retried)."""
    excused: Counter[str] = Counter()
    errors = []
    for error in record.server_errors:
        try:
            code = json.loads(error["body"]).get("code")
        except ValueError:
            code = None
        during = [
            k["victim"]
            for k in kills
            if k["wall"] <= error["at"] <= k["wall"] + k["down"] + OUTAGE_GRACE
            and code in UNAVAILABLE_WHILE_DOWN.get(k["victim"], ())
        ]
        if error["status"] == 503 and during:
            excused[f"503 {code}"] += 1
        else:
            errors.append({**error, "code": code})
    return {
        "ok": not errors,
        "count": len(errors),
        "first": errors[:5],
        "excused_during_outages": dict(excused),
        "dropped_connections": record.dropped_connections,
    }


CHECKS: dict[str, Callable[[Truth, Record], Check]] = {
    "pvps_atomic": pvps_atomic,
    "dt_conserved": dt_conserved,
    "supply_backed": supply_backed,
    "mints_exactly_once": mints_exactly_once,
    "redemptions_exactly_once": redemptions_exactly_once,
    "collateral_verified": collateral_verified,
}
