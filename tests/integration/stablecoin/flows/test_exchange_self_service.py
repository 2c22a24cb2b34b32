"""An exchange sees its own DT wallets, mints and redemptions (held ones with their reason) and
nothing of another exchange's. On SQLite and PostgreSQL, over real HTTP on anvil."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.ledger import service as ledger
from gateway.ledger.model import OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.stablecoin import watcher
from gateway.stablecoin.contract import MINTER_ROLE
from gateway.stablecoin.model import Redemption
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    FUNDED,
    OTHER_EXCHANGE,
    OTHER_WALLET,
    Deployment,
    Flow,
    running_flow,
)

pytestmark = pytest.mark.chain


def _get(flow: Flow, path: str, who: str = EXCHANGE, **params: Any) -> Any:
    resp = flow.client(who).get(path, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wallets(flow: Flow, who: str) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in _get(flow, "/v1/stablecoin/wallets", who)["wallets"]}


def _all_pages(flow: Flow, path: str, key: str, who: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, one item per page (so the cursor is exercised)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        extra: dict[str, Any] = {"cursor": cursor} if cursor is not None else {}
        page = _get(flow, path, who, limit=1, **params, **extra)
        items += page[key]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _without_subject(flow: Flow) -> Any:
    token = auth.create_key(flow.engine, "exchange").token
    return {"Authorization": f"Bearer {token}"}


def test_an_exchange_sees_its_own_wallets_with_balances_and_locked_dt(
    engine: Engine, dep: Deployment
) -> None:
    with running_flow(engine, dep) as flow:
        operator = flow.client("operator")
        opened = operator.post(
            "/v1/wallets", json={"id": "exch-1-spare", "kind": "exchange", "owner": EXCHANGE}
        )
        assert opened.status_code == 201, opened.text
        # Another kind of wallet with the exchange's name as owner is not a DT wallet it uses.
        ledger.apply(
            LedgerUnitOfWork(engine),
            [OpenWallet(id="exch-1-bank", kind=WalletKind.PARTICIPANT, owner=EXCHANGE)],
        )
        locked = operator.post(
            "/v1/locks",
            json={
                "id": "lock-1",
                "debit_wallet_id": EXCHANGE_WALLET,
                "credit_wallet_id": OTHER_WALLET,
                "amount": 30_00,
            },
        )
        assert locked.status_code == 201, locked.text
        assert flow.mint("w-1", 200_00, dep.holders[0].address).json()["state"] == "minted"

        mine = _wallets(flow, EXCHANGE)
        assert sorted(mine) == [EXCHANGE_WALLET, "exch-1-spare"]
        main = mine[EXCHANGE_WALLET]
        assert main["kind"] == "exchange" and main["owner"] == EXCHANGE
        assert main["posted"] == FUNDED - 200_00
        assert main["reserved"] == 30_00
        assert main["available"] == FUNDED - 200_00 - 30_00
        assert mine["exch-1-spare"]["posted"] == 0

        theirs = _wallets(flow, OTHER_EXCHANGE)
        assert sorted(theirs) == [OTHER_WALLET]
        assert theirs[OTHER_WALLET]["posted"] == FUNDED

        as_operator = operator.get("/v1/stablecoin/wallets")
        assert as_operator.status_code == 403
        no_subject = flow.client().get("/v1/stablecoin/wallets", headers=_without_subject(flow))
        assert no_subject.status_code == 403
        assert no_subject.json()["code"] == "EXCHANGE_NOT_NAMED"


def test_an_exchange_lists_its_mints_in_every_state_and_pages_through_them(
    engine: Engine, dep: Deployment
) -> None:
    holder = dep.holders[0].address
    with running_flow(engine, dep) as flow:
        first = flow.mint("m-1", 10_00, holder).json()
        second = flow.mint("m-2", 20_00, holder).json()
        dep.client.transact(dep.admin, "revokeRole", MINTER_ROLE, dep.operator.address)
        refunded = flow.mint("m-3", 30_00, holder).json()
        dep.client.transact(dep.admin, "grantRole", MINTER_ROLE, dep.operator.address)
        theirs = flow.client(OTHER_EXCHANGE).post(
            "/v1/stablecoin/mints",
            json={"amount": 40_00, "source_wallet_id": OTHER_WALLET, "evm_address": holder},
            headers={"Idempotency-Key": "m-1"},  # the same key, another exchange's own
        )
        assert theirs.status_code == 201, theirs.text
        assert [first["state"], second["state"], refunded["state"]] == [
            "minted",
            "minted",
            "refunded",
        ]
        assert refunded["error_code"] == "MISSING_ROLE"

        listed = _all_pages(flow, "/v1/stablecoin/mints", "mints", EXCHANGE)
        assert [m["id"] for m in listed] == [first["id"], second["id"], refunded["id"]]
        assert listed[2]["state"] == "refunded" and listed[2]["error_code"] == "MISSING_ROLE"
        assert all(m["object"] == "stablecoin_mint" for m in listed)

        minted = _all_pages(flow, "/v1/stablecoin/mints", "mints", EXCHANGE, state="minted")
        assert [m["id"] for m in minted] == [first["id"], second["id"]]
        only_refunded = _get(flow, "/v1/stablecoin/mints", state="refunded")
        assert [m["id"] for m in only_refunded["mints"]] == [refunded["id"]]
        assert only_refunded["next_cursor"] is None
        assert _get(flow, "/v1/stablecoin/mints", state="submitted")["mints"] == []

        other = _get(flow, "/v1/stablecoin/mints", OTHER_EXCHANGE)["mints"]
        assert [m["id"] for m in other] == [theirs.json()["id"]]

        # Another exchange's mint is no cursor of mine, and no state is made up.
        foreign_cursor = flow.client().get(
            "/v1/stablecoin/mints", params={"cursor": theirs.json()["id"]}
        )
        assert foreign_cursor.status_code == 400
        assert foreign_cursor.json()["code"] == "INVALID_CURSOR"
        bad_state = flow.client().get("/v1/stablecoin/mints", params={"state": "lost"})
        assert bad_state.status_code == 400
        assert flow.client("operator").get("/v1/stablecoin/mints").status_code == 403
        no_subject = flow.client().get("/v1/stablecoin/mints", headers=_without_subject(flow))
        assert no_subject.status_code == 403


def test_an_exchange_sees_its_held_redemptions_with_the_reason_and_no_one_elses(
    engine: Engine, dep: Deployment
) -> None:
    holder = dep.holders[0]
    with running_flow(engine, dep) as flow:
        operator = flow.client("operator")
        for wallet_id, owner in (("exch-1-old", EXCHANGE), ("exch-2-old", OTHER_EXCHANGE)):
            opened = operator.post(
                "/v1/wallets", json={"id": wallet_id, "kind": "exchange", "owner": owner}
            )
            assert opened.status_code == 201, opened.text
            closed = operator.post(f"/v1/wallets/{wallet_id}/status", json={"status": "closed"})
            assert closed.status_code == 200, closed.text
        assert flow.mint("r", 100_00, holder.address).json()["state"] == "minted"
        dep.client.redeem(holder, 10_00, EXCHANGE_WALLET)  # paid to exch-1
        dep.client.redeem(holder, 11_00, "exch-1-old")  # held: exch-1's closed wallet
        dep.client.redeem(holder, 12_00, "exch-2-old")  # held: exch-2's closed wallet
        dep.client.redeem(holder, 13_00, "typo-wallet")  # held: nobody's
        recorded: list[Redemption] = []
        while len(recorded) < 4:
            recorded += watcher.poll(flow.uow, flow.sc).redemptions

        def amounts(who: str, **params: Any) -> list[tuple[int, str]]:
            found = _all_pages(flow, "/v1/stablecoin/redemptions", "redemptions", who, **params)
            return [(r["amount"], r["state"]) for r in found]

        assert amounts(EXCHANGE) == [(10_00, "paid"), (11_00, "held")]
        assert amounts(EXCHANGE, state="held") == [(11_00, "held")]
        assert amounts(EXCHANGE, state="paid") == [(10_00, "paid")]
        assert amounts(OTHER_EXCHANGE) == [(12_00, "held")]
        assert amounts("operator") == [
            (10_00, "paid"),
            (11_00, "held"),
            (12_00, "held"),
            (13_00, "held"),
        ]
        held_ones = [(11_00, "held"), (12_00, "held"), (13_00, "held")]
        assert amounts("operator", state="held") == held_ones

        held = _get(flow, "/v1/stablecoin/redemptions", state="held")["redemptions"][0]
        assert held["dt_wallet_ref"] == "exch-1-old"
        assert held["reason"] == "wallet exch-1-old is closed"
        # Its event went to its exchange, not to the other one.
        events = _get(flow, "/v1/events", type="redemption.held")["events"]
        assert [e["data"]["amount"] for e in events] == [11_00]
        others = _get(flow, "/v1/events", OTHER_EXCHANGE, type="redemption.held")["events"]
        assert [e["data"]["amount"] for e in others] == [12_00]

        # A held redemption recorded without its exchange (as earlier versions did for a closed
        # wallet) is still found by its reference, by its exchange only.
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE stablecoin_redemption SET exchange = '' WHERE dt_wallet_ref IN "
                    "('exch-1-old', 'exch-2-old')"
                )
            )
        assert amounts(EXCHANGE) == [(10_00, "paid"), (11_00, "held")]
        assert amounts(OTHER_EXCHANGE) == [(12_00, "held")]

        no_subject = flow.client().get("/v1/stablecoin/redemptions", headers=_without_subject(flow))
        assert no_subject.status_code == 403
        assert no_subject.json()["code"] == "EXCHANGE_NOT_NAMED"

        # Once an operator pays the nobody's one into exch-2's wallet, it is exch-2's.
        typo = next(r for r in recorded if r.dt_wallet_ref == "typo-wallet")
        paid = operator.post(
            f"/v1/stablecoin/redemptions/{typo.tx_hash}/{typo.log_index}/pay",
            json={"wallet_id": OTHER_WALLET, "reason": "exch-2 ticket 7"},
        )
        assert paid.status_code == 200, paid.text
        assert amounts(OTHER_EXCHANGE) == [(12_00, "held"), (13_00, "paid")]
        assert amounts(EXCHANGE) == [(10_00, "paid"), (11_00, "held")]


def test_the_self_service_routes_are_in_the_openapi_document(
    sqlite_engine: Engine, dep: Deployment
) -> None:
    with running_flow(sqlite_engine, dep) as flow:
        doc = flow.client().get("/schema/openapi.json").json()
    paths = doc["paths"]
    wallets = paths["/v1/stablecoin/wallets"]["get"]
    assert wallets["responses"]["200"]["content"]["application/json"]["schema"]
    assert "EXCHANGE_NOT_NAMED" in wallets["responses"]["403"]["description"]
    mints = paths["/v1/stablecoin/mints"]["get"]
    names = {p["name"] for p in mints["parameters"]}
    assert {"state", "cursor", "limit"} <= names
    assert "INVALID_CURSOR" in mints["responses"]["400"]["description"]
    redemptions = paths["/v1/stablecoin/redemptions"]["get"]
    assert "state" in {p["name"] for p in redemptions["parameters"]}
