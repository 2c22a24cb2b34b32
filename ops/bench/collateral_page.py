"""The public collateral page in a browser, for the proof-of-collateral benchmark
(``ops/bench/collateral.py``, ``--only page``): ``GET /collateral`` in headless Chromium
(Debian's ``/usr/bin/chromium`` through Playwright) over a log whose chart holds 1,000 reserve
statements, from navigation to the end of the page's own in-browser check.

:func:`page_log` pools a plausible history (deposits, mints, redemptions, statements) so that
the chart and the check have real work; :func:`run_page_bench` is skipped, with a message,
where Chromium is not installed.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from collateral_logs import SEG, collateral_log, drain, engine_at, open_wallets
from collateral_serving import start_server, wait_up

from gateway.collateral import entries as fmt
from gateway.collateral import service
from gateway.collateral.note import Signer
from gateway.collateral.store import CollateralUnitOfWork

CHROMIUM = "/usr/bin/chromium"


def page_log(engine: sa.Engine, statements: int) -> None:
    """Pool a history of ``statements`` rounds, a minute apart: a DT deposit, its mint and a
    reserve statement, with a redemption (burn and payout) every tenth round."""
    start = datetime.now(UTC).timestamp() - 60 * statements
    balance = supply = 0
    rows: list[dict[str, Any]] = []

    def add(kind: str, entry: fmt.Entry, at: datetime, **refs: Any) -> None:
        body = fmt.encode(entry).decode()
        row = {"transfer_id": None, "tx_hash": None, "log_index": None, **refs}
        rows.append({"wallet_id": SEG, "kind": kind, "body": body, "created_at": at, **row})

    for i in range(statements):
        at = datetime.fromtimestamp(start + 60 * i, UTC)
        t = service.rfc3339(at)
        tx = f"0x{i:064x}"
        amount = 1_000_00 + (i * 7919) % 50_000_00
        balance += amount
        add("dt", fmt.DtMovement(f"mint-{i}", "transfer", amount, balance, t), at,
            transfer_id=f"mint-{i}")  # fmt: skip
        supply += amount
        mint = fmt.ChainMint(tx, 0, 10 + 2 * i, "0x" + "70" * 20, amount, tx, f"mint-{i}", supply)
        add("mint", mint, at, transfer_id=f"mint-{i}", tx_hash=tx, log_index=0)
        if i % 10 == 9:
            out = amount // 2
            burn_tx = f"0x{i + 10**6:064x}"
            payout = fmt.redemption_transfer_id(burn_tx, 1)
            supply -= out
            burn = fmt.ChainBurn(burn_tx, 1, 11 + 2 * i, "0x" + "70" * 20, out, "x-0", payout,
                                 supply)  # fmt: skip
            add("burn", burn, at, transfer_id=payout, tx_hash=burn_tx, log_index=1)
            balance -= out
            add("dt", fmt.DtMovement(payout, "redeem", -out, balance, t), at, transfer_id=payout)
        statement = fmt.Statement(11 + 2 * i, f"0x{i + 2 * 10**6:064x}", supply, balance, t)
        add("statement", statement, at)
    uow = CollateralUnitOfWork(engine)
    with uow:
        uow.collateral.add_pending_many(rows)
        uow.commit()


def bench_page_load(url: str, loads: int = 20) -> dict[str, float]:
    """Median and p95 of ``loads`` loads of the page in headless Chromium, until its check."""
    from playwright.sync_api import sync_playwright

    times: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for k in range(loads + 1):
            t0 = time.perf_counter()
            page.goto(url + "/collateral", wait_until="load")
            page.wait_for_selector("#browser-check[data-check]", state="attached")
            elapsed = (time.perf_counter() - t0) * 1000
            for check in ("inclusion", "figures", "signature"):  # no witness here
                state = page.get_attribute(f'li[data-check="{check}"]', "class")
                assert state == "ok", f"the page's own {check} check says {state}"
            assert page.get_attribute("svg[data-points]", "data-points") == "1000"
            if k:  # the first load warms the browser's and the server's caches
                times.append(elapsed)
        browser.close()
    times.sort()
    return {"page_load_ms": statistics.median(times), "page_load_p95_ms": times[-2]}


def run_page_bench(tmp: Path, signer: Signer) -> dict[str, float]:
    """The page over a log of 1,000 statements, served by the gateway; prints its figures."""
    if not Path(CHROMIUM).exists():
        print(f"page load: skipped ({CHROMIUM} is missing: ops/setup installs it)")
        return {}
    db = tmp / "page.db"
    engine = engine_at(db)
    open_wallets(engine, 0)
    page_log(engine, 1000)
    drain(engine, collateral_log(signer))
    engine.dispose()
    server, port = start_server(db, signer)
    try:
        wait_up(port)
        result = bench_page_load(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.join(10)
    print(
        f"page load (Chromium, 1,000 statements in the chart): p50 {result['page_load_ms']:.0f}"
        f" ms, p95 {result['page_load_p95_ms']:.0f} ms"
    )
    return result
