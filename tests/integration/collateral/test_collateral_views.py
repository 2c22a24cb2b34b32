"""The collateral log's views for people, over real HTTP on SQLite and PostgreSQL: reserve
statements and movements newest first, paged back to the first; each DT movement with the chain
transaction of its mint or redemption; nothing beyond the checkpoint served; and the page itself
(HTML, its own assets, limited per address, a clear 503 where there is no log)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.api.collateral_page import CSP
from gateway.collateral import entries as fmt
from gateway.collateral import service
from gateway.collateral.note import Signer
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import load_settings
from gateway.db import utcnow
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.serving import serve_in_thread
from tests.support.fuzz import report, run_schemathesis

SEG = "segregated-views"
ORIGIN = "test.example/collateral/31337/0x00000000000000000000000000000000000000dd"
HOLDER = "0x" + "70" * 20


def _uow(engine: Engine) -> service.UowFactory:
    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    return uow


@dataclass
class History:
    """What was logged, as the tests expect to read it back."""

    balance: int = 0
    supply: int = 0
    block: int = 100
    mints: int = 0


def _pool(engine: Engine, clog: CollateralLog, items: list[service.ChainEntry]) -> None:
    uow = CollateralUnitOfWork(engine)
    with uow:
        service.pool_chain_entries(uow, clog, items, utcnow())
        uow.commit()


def _transfer(engine: Engine, tid: str, debit: str, credit: str, amount: int) -> None:
    ledger.apply_one(
        LedgerUnitOfWork(engine),
        MakeTransfer(id=tid, debit_wallet_id=debit, credit_wallet_id=credit, amount=amount),
    )


def mint(engine: Engine, clog: CollateralLog, h: History, amount: int) -> str:
    """A mint's DT deposit (through the ledger's trigger), its Minted event, a statement."""
    h.mints += 1
    tid, tx = f"mint-{h.mints}", f"0x{h.mints:064x}"
    _transfer(engine, tid, "x", SEG, amount)
    h.balance += amount
    h.supply += amount
    h.block += 1
    body = fmt.encode(
        fmt.ChainMint(tx, 0, h.block, HOLDER, amount, "0x" + "11" * 32, tid, h.supply)
    )
    _pool(engine, clog, [service.ChainEntry("mint", body, tid, tx, 0), _statement(h)])
    return tx


def redeem(engine: Engine, clog: CollateralLog, h: History, amount: int) -> str:
    """A Redeemed event, its DT payout, a statement."""
    tx = f"0x{10**6 + h.block:064x}"
    tid = fmt.redemption_transfer_id(tx, 1)
    h.supply -= amount
    h.block += 1
    body = fmt.encode(fmt.ChainBurn(tx, 1, h.block, HOLDER, amount, "x", tid, h.supply))
    _pool(engine, clog, [service.ChainEntry("burn", body, tid, tx, 1)])
    _transfer(engine, tid, SEG, "x", amount)
    h.balance -= amount
    _pool(engine, clog, [_statement(h)])
    return tx


def _statement(h: History) -> service.ChainEntry:
    return service.statement_entry(h.block, "0x" + "ee" * 32, h.supply, h.balance, utcnow())


def integrate(engine: Engine, clog: CollateralLog) -> int:
    while service.integrate(_uow(engine), clog).added:
        pass
    clog.checkpoint = None  # serve what was just signed
    return service.checkpoint(_uow(engine), clog)[1]


@dataclass
class Served:
    client: httpx.Client
    clog: CollateralLog
    engine: Engine
    history: History
    txs: list[str]


@pytest.fixture
def served(engine: Engine) -> Iterator[Served]:
    settings = load_settings(environ={}, collateral={"rate_per_second": 1000, "rate_burst": 10**5})
    clog = CollateralLog(SEG, ORIGIN, Signer.generate(ORIGIN), settings.collateral)
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id=SEG, kind=WalletKind.SEGREGATED_COLLATERAL, owner="stablecoin"),
            OpenWallet(id="x", kind=WalletKind.EXCHANGE, owner="exchange"),
            Issue(id="fund", wallet_id="x", amount=10**12),
        ],
    )
    h = History()
    txs = [mint(engine, clog, h, 1_000_00 + i) for i in range(5)]
    _transfer(engine, "refund-by-hand", "x", SEG, 7_00)  # DT in and out with no chain tx
    _transfer(engine, "refund-by-hand-out", SEG, "x", 7_00)
    txs.append(redeem(engine, clog, h, 250_00))
    integrate(engine, clog)
    with (
        serve_in_thread(create_app(settings, engine, collateral=clog)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield Served(client, clog, engine, h, txs)


def _all(client: httpx.Client, path: str, key: str, limit: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    params: dict[str, int] = {"limit": limit}
    while True:
        page = client.get(path, params=params).json()
        items += page[key]
        if page["next_before"] is None:
            return items
        params["before"] = page["next_before"]


def test_statements_come_newest_first_and_page_back_to_the_first(served: Served) -> None:
    c, h = served.client, served.history
    first = c.get("/v1/collateral/statements", params={"limit": 2}).json()
    newest = c.get("/v1/collateral/statement").json()
    assert first["statements"][0]["index"] == newest["index"]
    assert first["statements"][0]["reserve"] == newest["entry"]["reserve"] == h.balance
    assert first["statements"][0]["supply"] == newest["entry"]["supply"] == h.supply
    every = _all(c, "/v1/collateral/statements", "statements", 2)
    assert len(every) == 6
    indexes = [s["index"] for s in every]
    assert indexes == sorted(indexes, reverse=True)
    assert [s["supply"] for s in every][::-1] == [
        sum(1_000_00 + k for k in range(i + 1)) for i in range(5)
    ] + [h.supply]
    for s in every:  # each is the entry at its index, as the proofs serve it
        entry = c.get(f"/v1/collateral/entries/{s['index']}").json()["entry"]
        assert (entry["type"], entry["reserve"], entry["block"]) == (
            "statement",
            s["reserve"],
            s["block"],
        )


def test_movements_carry_the_chain_transaction_of_their_mint_or_redemption(
    served: Served,
) -> None:
    moves = _all(served.client, "/v1/collateral/movements", "movements", 3)
    by_transfer: dict[object, list[dict[str, object]]] = {}
    for m in moves:
        by_transfer.setdefault(m["transfer_id"], []).append(m)
    assert len(moves) == 5 * 2 + 2 + 2  # deposits and mints, DT in and out by hand, a burn
    for i, tx in enumerate(served.txs[:5], start=1):
        kinds = {m["type"]: m for m in by_transfer[f"mint-{i}"]}
        assert kinds["dt"]["tx_hash"] == kinds["mint"]["tx_hash"] == tx
        assert kinds["dt"]["amount"] == kinds["mint"]["amount"] == 1_000_00 + i - 1
    burn_tx = served.txs[5]
    payout = fmt.redemption_transfer_id(burn_tx, 1)
    kinds = {m["type"]: m for m in by_transfer[payout]}
    assert kinds["burn"]["amount"] == kinds["dt"]["amount"] == -250_00
    assert kinds["dt"]["tx_hash"] == kinds["burn"]["tx_hash"] == burn_tx
    assert kinds["dt"]["after"] == served.history.balance
    assert kinds["burn"]["after"] == served.history.supply
    assert by_transfer["refund-by-hand"][0]["tx_hash"] is None
    assert by_transfer["refund-by-hand"][0]["entry"]["op"] == "transfer"


def test_nothing_beyond_the_checkpoint_served_is_shown(served: Served) -> None:
    c, clog, engine = served.client, served.clog, served.engine
    before = c.get("/v1/collateral/statements", params={"limit": 1000}).json()
    served_note, served_size = service.checkpoint(_uow(engine), clog)
    mint(engine, clog, served.history, 5_00)
    while service.integrate(_uow(engine), clog).added:
        pass
    # This replica still serves the checkpoint it read (its cache): so do the views.
    clog.checkpoint = (time.monotonic() + 3600, served_note, served_size)
    after = c.get("/v1/collateral/statements", params={"limit": 1000}).json()
    assert after == before and after["tree_size"] == served_size
    moves = c.get("/v1/collateral/movements", params={"limit": 100}).json()
    assert all(m["index"] < served_size for m in moves["movements"])
    clog.checkpoint = None
    grown = c.get("/v1/collateral/statements", params={"limit": 1000}).json()
    assert len(grown["statements"]) == len(before["statements"]) + 1


@pytest.mark.parametrize(
    "path",
    [
        "/v1/collateral/statements?limit=0",
        "/v1/collateral/statements?limit=1001",
        "/v1/collateral/statements?before=-1",
        "/v1/collateral/movements?limit=101",
        "/v1/collateral/movements?before=99999999999999999999",
    ],
)
def test_limits_out_of_bounds_are_refused(served: Served, path: str) -> None:
    resp = served.client.get(path)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_the_page_is_html_with_its_own_assets_only(served: Served) -> None:
    c = served.client
    page = c.get("/collateral")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["cache-control"] == "no-store"
    assert f'data-size="{service.checkpoint(_uow(served.engine), served.clog)[1]}"' in page.text
    for name, kind in (
        ("collateral.css", "text/css"),
        ("collateral.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ):
        asset = c.get(f"/collateral/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert f"/collateral/assets/{name}?v=" in page.text
    assert c.get("/collateral/assets/nothing.js").status_code == 404
    doc = c.get("/schema/openapi.json").json()["paths"]
    assert "text/html" in doc["/collateral"]["get"]["responses"]["200"]["content"]
    for path in ("/v1/collateral/statements", "/v1/collateral/movements", "/collateral"):
        assert "429" in doc[path]["get"]["responses"]


def test_the_page_is_limited_per_address_and_says_when_there_is_no_log(engine: Engine) -> None:
    settings = load_settings(environ={}, collateral={"rate_per_second": 1, "rate_burst": 3})
    with (
        serve_in_thread(create_app(settings, engine)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        pages = [client.get("/collateral") for _ in range(3)]
        assert [p.status_code for p in pages] == [503] * 3
        assert pages[0].headers["content-type"].startswith("text/html")
        assert "keeps no collateral log" in pages[0].text
        limited = client.get("/collateral")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


@pytest.mark.slow
def test_every_answer_of_the_views_and_the_page_is_as_the_openapi_document_declares(
    served: Served, tmp_path: Path
) -> None:
    run = run_schemathesis(
        str(served.client.base_url).rstrip("/"),
        None,
        "--include-path-regex",
        "^(/v1/collateral/(statements|movements)|/collateral(/assets/.*)?)$",
        workdir=tmp_path,
    )
    assert run.returncode == 0, report(run)
