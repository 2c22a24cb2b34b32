"""The public proof-of-collateral page in headless Chromium, against a gateway on anvil with
real mints, a refunded mint and a redemption, its checkpoints cosigned by a witness, in a
browser that may reach 127.0.0.1 only.

The numbers the page renders are compared with the APIs' (the newest statement, the stablecoin
reconciliation, the checkpoint, the views), the page's own in-browser check must pass, and
nothing outside 127.0.0.1 may be asked for. The screenshot is kept: under the test's tmp dir
and as ``var/test-artifacts/collateral-page.png``.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.collateral import service as collateral
from gateway.collateral import witnessing
from gateway.collateral.note import Checkpoint, Signer
from gateway.collateral.runtime import origin_of
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import load_settings
from gateway.messaging.serving import serve_in_thread
from gateway.stablecoin import service, watcher
from gateway.stablecoin.contract import MINTER_ROLE
from gateway.stablecoin.runtime import Stablecoin
from tests.support.browser import ARTIFACTS, localhost_only
from tests.support.stablecoin import (
    Deployment,
    Flow,
    setup_exchanges,
)
from tests.support.witnesses import running_witness

pytestmark = pytest.mark.chain

ARTIFACT = ARTIFACTS / "collateral-page.png"


def _kzt(text: str) -> int:
    """``1,234.56`` (KZT as the page shows it) as tiyn."""
    whole, cents = text.strip().split(".")
    assert len(cents) == 2, text
    return int(whole.replace(",", "")) * 100 + int(cents)


@contextmanager
def witnessed_flow(engine: Engine, dep: Deployment, tmp: Path) -> Iterator[tuple[Flow, Any]]:
    """A gateway over real HTTP whose collateral log a witness on 127.0.0.1 cosigns."""
    origin = origin_of("dt-gateway", dep.client.chain_id, dep.client.address)
    log_key = Signer.generate(origin)
    with running_witness(tmp / "witness", [log_key.verifier()]) as witness:
        settings = load_settings(
            environ={},
            database={"url": engine.url.render_as_string(hide_password=False)},
            stablecoin=dep.settings_values(),
            collateral={"log_key": log_key.skey(), "witnesses": [witness.setting()]},
        )
        sc = Stablecoin.from_settings(settings)
        tokens = setup_exchanges(engine)
        with serve_in_thread(create_app(settings, engine, stablecoin=sc)) as url:
            flow = Flow(engine, dep, settings, sc, url, tokens)
            try:
                yield flow, witness
            finally:
                for c in flow.clients.values():
                    c.close()


def _settle(flow: Flow, supply: int) -> dict[str, Any]:
    """Run the jobs a server runs (chain watcher, integrator, witnessing) until the newest
    statement in a served checkpoint states ``supply``; returns that statement."""
    clog = flow.sc.collateral
    assert clog is not None
    uow = partial(CollateralUnitOfWork, flow.engine)
    for _ in range(50):
        watcher.poll(flow.uow, flow.sc)
        collateral.integrate(uow, clog)
        transport = witnessing.HttpTransport(timeout=10)
        try:
            witnessing.submit(uow, clog, transport)
        finally:
            transport.close()
        clog.checkpoint = None
        got = flow.client().get("/v1/collateral/statement")
        if got.status_code == 200 and got.json()["entry"]["supply"] == supply:
            return dict(got.json())
        flow.dep.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    raise AssertionError(f"no reserve statement of supply {supply}")


def _history(flow: Flow, dep: Deployment) -> tuple[list[str], dict[str, Any]]:
    """Two mints, a mint the contract refuses (refunded), a redemption, each followed by the
    jobs, so that the log states the reserve after each. Returns the mints' chain transactions
    and the newest statement."""
    holder = dep.holders[0]
    txs = []
    supply = 0
    for key, amount in (("page-1", 1_234_56), ("page-2", 500_00)):
        made = flow.mint(key, amount, holder.address)
        assert made.status_code == 201 and made.json()["state"] == "minted", made.text
        txs.append(made.json()["tx_hash"])
        supply += amount
        _settle(flow, supply)
    dep.client.transact(dep.admin, "revokeRole", MINTER_ROLE, dep.operator.address)
    refused = flow.mint("page-3", 70_00, holder.address)
    assert refused.json()["state"] == "refunded", refused.text
    dep.client.transact(dep.admin, "grantRole", MINTER_ROLE, dep.operator.address)
    dep.client.redeem(holder, 300_01, "exch-1-dt")
    return txs, _settle(flow, supply - 300_01)


def test_the_page_shows_the_apis_numbers_checks_its_proof_and_reaches_nothing_outside(
    sqlite_engine: Engine, dep: Deployment, browser: Any, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        flow, witness = stack.enter_context(witnessed_flow(sqlite_engine, dep, tmp_path))
        mint_txs, statement = _history(flow, dep)
        supply = 1_234_56 + 500_00 - 300_01
        service.reconcile(flow.uow, flow.sc)
        api = flow.client()
        recon = api.get("/v1/stablecoin/reconciliation").json()
        note = api.get("/collateral/log/checkpoint").text
        checkpoint = Checkpoint.parse(note.split("\n\n", 1)[0] + "\n")
        vkey = api.get("/v1/collateral/keys").json()["log"]["vkey"]
        statements = api.get("/v1/collateral/statements", params={"limit": 1000}).json()
        movements = api.get("/v1/collateral/movements").json()["movements"]

        offline = stack.enter_context(localhost_only(browser))
        page = offline.page()
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(flow.url + "/collateral", wait_until="load")
        page.wait_for_selector("#browser-check[data-check]", state="attached")
        shot = tmp_path / "collateral-page.png"
        page.screenshot(path=str(shot), full_page=True)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, ARTIFACT)

        # The browser checked the newest statement's proof and the checkpoint's signature.
        assert page.get_attribute("#browser-check", "data-check") == "passed"
        for name in ("inclusion", "figures", "signature", "cosignatures"):
            assert page.get_attribute(f'li[data-check="{name}"]', "class") == "ok"

        # Reserve and supply: the statement's, the reconciliation's and the chain's.
        reserve = _kzt(page.inner_text("#reserve"))
        shown_supply = _kzt(page.inner_text("#supply"))
        assert reserve == statement["entry"]["reserve"] == recon["segregated_balance"] == supply
        assert shown_supply == statement["entry"]["supply"] == recon["total_supply"] == supply
        assert dep.client.total_supply() == supply
        assert page.inner_text("#coverage") == "100.00 %"
        assert page.get_attribute("#statement-index", "data-index") == str(statement["index"])

        # The checkpoint: size, root and time, as served.
        assert page.get_attribute("#tree-size", "data-size") == str(checkpoint.size)
        assert page.inner_text("#root") == base64.b64encode(checkpoint.root).decode()
        assert f"timestamp {page.get_attribute('#checkpoint-time', 'data-unix')}" in (
            checkpoint.extensions
        )
        # The witness's cosignature: in the checkpoint served, named on the page.
        w_name, w_id = witness.vkey.split("+")[:2]
        assert f"\n\u2014 {w_name} " in note
        cosigners = page.eval_on_selector_all(
            "#cosigners li",
            "items => items.map(i => [i.dataset.name, i.dataset.keyId, i.dataset.witness])",
        )
        assert cosigners == [[w_name, w_id, "true"]]

        # The chart holds every statement; the movements are the API's, with their txs.
        assert len(statements["statements"]) >= 3  # after each mint and the redemption
        assert page.get_attribute("svg[data-points]", "data-points") == str(
            len(statements["statements"])
        )
        rows = page.eval_on_selector_all(
            "#movements tbody tr",
            "rows => rows.map(r => [Number(r.dataset.index), r.dataset.type,"
            " Number(r.dataset.amount), Number(r.dataset.after), r.dataset.tx || null])",
        )
        assert rows == [
            [m["index"], m["type"], m["amount"], m["after"], m["tx_hash"]] for m in movements
        ]
        logged_txs = {m["tx_hash"] for m in movements if m["type"] == "mint"}
        assert set(mint_txs) <= logged_txs
        assert any(m["type"] == "dt" and m["tx_hash"] is None for m in movements)  # the refund

        # The exact command to verify it all.
        command = page.inner_text("#verify-command")
        assert f"--url {flow.url} " in command and f"--log-key '{vkey}'" in command
        assert f"--witness '{witness.vkey}'" in command

        # Everything came from the gateway; nothing else was asked for, nothing failed.
        assert offline.outside == []
        asked = offline.asked
        assert asked and all(u.startswith(flow.url + "/collateral") for u in asked), asked
        assert offline.failed == [] and errors == []

        # The gate is real: a request elsewhere is stopped and recorded.
        with pytest.raises(Exception, match="net::ERR_FAILED"):
            page.goto("http://198.51.100.7/", wait_until="commit")
        assert offline.outside == ["http://198.51.100.7/"]
