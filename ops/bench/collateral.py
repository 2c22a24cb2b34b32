"""Proof-of-collateral benchmark: the log's append rate, checkpoint lag, serving and proofs,
and the public verifier over a million entries. SQLite file, durable settings.

- ``append_entries_per_s``: entries sequenced into the tree per second, durably (each batch's
  entries, subtree hashes and signed checkpoint in one committed transaction), from a pool of
  200,000;
- ``pool_entries_per_s``: ledger transfers into the segregated wallet per second from 8
  concurrent clients through the group committer, each pooling its entry in its own transaction;
- ``checkpoint_lag_p95_ms``: from a ledger transfer's commit to the commit of the first
  checkpoint that includes it, with the integrator running every ``integrate_seconds`` as the
  job does, under 200 transfers a second;
- ``cosigned_checkpoint_lag_p95_ms``: from a ledger transfer's commit to the moment the checkpoint
  served (as a replica serves it, through its cache) includes it and carries the cosignature of a
  witness on this machine (a ``dt-gateway witness`` process, its state fsynced before it
  answers), with the integrator and the witnessing job at their default periods, under 200
  transfers a second;
- ``checkpoint_rps``: ``GET /collateral/log/checkpoint`` over HTTP (the gateway's app in its own
  process, 8 keep-alive client connections);
- ``inclusion_proof_ms_1m`` / ``consistency_proof_ms_1m``: the server computing one proof (p50 of
  200) over a log of 1,000,000 entries;
- ``verify_full_1m_s``: a fresh verifier over those 1,000,000 entries, from the gateway's tiles
  over HTTP (RPC excluded: the log holds no chain entries);
- ``verify_incremental_s``: the same verifier, with its state file, after 100 new entries;
- ``page_load_ms``: ``GET /collateral`` in headless Chromium (Debian's ``/usr/bin/chromium``
  through Playwright) over a log whose chart holds 1,000 reserve statements, from navigation to
  the end of the page's own in-browser check (inclusion proof and signature); p50 of 20 loads
  after one to warm up. Skipped, with a message, where Chromium is not installed.

Usage: ``.venv/bin/python ops/bench/collateral.py [--entries 1000000] [--seconds 5]
[--only page]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.collateral import entries as fmt
from gateway.collateral import service, witnessing
from gateway.collateral.note import NoteError, Signer, Verifier, open_note
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import CollateralSettings, DatabaseSettings, load_settings
from gateway.db import make_engine, upgrade
from gateway.ledger import service as ledger
from gateway.ledger.group import GroupCommitter
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.serving import free_port

SEG = "segregated-bench"
CHROMIUM = "/usr/bin/chromium"
ORIGIN = "bench.example/collateral/31337/0x00000000000000000000000000000000000000be"
"""Chain 31337, the chain id the bench's stand-in RPC answers."""


def _engine(path: Path) -> sa.Engine:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    upgrade(engine)
    return engine


def _uow(engine: sa.Engine) -> service.UowFactory:
    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    return uow


def _log(signer: Signer, **settings: Any) -> CollateralLog:
    return CollateralLog(SEG, ORIGIN, signer, CollateralSettings(**settings))


def _wallets(engine: sa.Engine, clients: int) -> None:
    ops: list[Any] = [OpenWallet(id=SEG, kind=WalletKind.SEGREGATED_COLLATERAL, owner="bench")]
    for c in range(clients):
        ops += [
            OpenWallet(id=f"x-{c}", kind=WalletKind.EXCHANGE, owner="bench"),
            Issue(id=f"fund-{c}", wallet_id=f"x-{c}", amount=10**15),
        ]
    ledger.apply(LedgerUnitOfWork(engine), ops)


def pool_bodies(engine: sa.Engine, start: int, count: int, balance: int = 0) -> int:
    """Pool ``count`` already-encoded DT movements of +1 each (a valid history to replay)."""
    now = datetime.now(UTC)
    t = service.rfc3339(now)
    chunk = 20_000
    for lo in range(0, count, chunk):
        rows = []
        for i in range(lo, min(count, lo + chunk)):
            balance += 1
            body = fmt.encode(
                fmt.DtMovement(
                    transfer_id=f"t-{start + i}", op="transfer", amount=1, balance=balance, time=t
                )
            )
            rows.append(
                {
                    "wallet_id": SEG,
                    "kind": "dt",
                    "body": body.decode(),
                    "transfer_id": f"t-{start + i}",
                    "created_at": now,
                }
            )
        uow = CollateralUnitOfWork(engine)
        with uow:
            uow.collateral.add_pending_many(rows)
            uow.commit()
    return balance


def drain(engine: sa.Engine, clog: CollateralLog) -> int:
    total = 0
    while (done := service.integrate(_uow(engine), clog)).added:
        total += done.added
    return total


# ------------------------------------------------------------------ parts


def bench_append(tmp: Path, signer: Signer, n: int = 200_000) -> float:
    engine = _engine(tmp / "append.db")
    _wallets(engine, 0)
    pool_bodies(engine, 0, n)
    clog = _log(signer, batch_limit=5000)
    t0 = time.perf_counter()
    assert drain(engine, clog) == n
    rate = n / (time.perf_counter() - t0)
    engine.dispose()
    return rate


def bench_pool_and_lag(tmp: Path, signer: Signer, seconds: float, rate: float) -> dict[str, float]:
    engine = _engine(tmp / "lag.db")
    clients = 8
    _wallets(engine, clients)
    committer = GroupCommitter(lambda: LedgerUnitOfWork(engine))

    # Pool throughput: 8 clients, each transfer its own transaction (grouped commits).
    count = {"n": 0}
    stop_at = time.perf_counter() + seconds

    def client(c: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            op = MakeTransfer(
                id=f"p-{c}-{i}", debit_wallet_id=f"x-{c}", credit_wallet_id=SEG, amount=1
            )
            committer.submit(op)
            i += 1
        count["n"] += i

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool_rate = count["n"] / (time.perf_counter() - t0)
    clog = _log(signer, batch_limit=5000)
    drain(engine, clog)
    base = service.integrate(_uow(engine), clog).size

    # Lag: transfers at ``rate`` a second, the integrator every integrate_seconds.
    committed: list[float] = []
    integrated: list[tuple[int, float]] = []
    done = threading.Event()

    def integrator() -> None:
        while not done.is_set():
            r = service.integrate(_uow(engine), clog)
            integrated.append((r.size, time.perf_counter()))
            time.sleep(clog.settings.integrate_seconds)

    it = threading.Thread(target=integrator)
    it.start()
    start = time.perf_counter()
    for i in range(int(seconds * rate)):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        ledger.apply_one(
            LedgerUnitOfWork(engine),
            MakeTransfer(id=f"l-{i}", debit_wallet_id="x-0", credit_wallet_id=SEG, amount=1),
        )
        committed.append(time.perf_counter())
    while not integrated or integrated[-1][0] < base + len(committed):
        time.sleep(0.05)
    done.set()
    it.join()
    committer.stop()
    lags = []
    for k, at in enumerate(committed):
        first = next(t for size, t in integrated if size > base + k and t >= at)
        lags.append((first - at) * 1000)
    lags.sort()
    engine.dispose()
    return {
        "pool_entries_per_s": pool_rate,
        "checkpoint_lag_p50_ms": lags[len(lags) // 2],
        "checkpoint_lag_p95_ms": lags[int(len(lags) * 0.95)],
    }


@contextmanager
def witness_process(data: Path, log_vkey: str) -> Iterator[dict[str, str]]:
    """A ``dt-gateway witness`` on this machine following the log; yields what it printed."""
    binary = Path(sys.executable).parent / "dt-gateway"
    proc = subprocess.Popen(
        [str(binary), "witness", "--port", "0", "--data", str(data), "--log", log_vkey],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)


def bench_cosigned_lag(tmp: Path, signer: Signer, seconds: float, rate: float) -> dict[str, float]:
    engine = _engine(tmp / "cosigned.db")
    _wallets(engine, 1)
    with witness_process(tmp / "witness", signer.vkey()) as w:
        clog = _log(signer, witnesses=[{"url": w["url"], "vkey": w["vkey"]}])
        key = (signer.verifier(), Verifier.from_vkey(w["vkey"]))
        transport = witnessing.HttpTransport(clog.settings.witness_timeout_seconds)
        served: list[tuple[int, float]] = []  # (size, when first served cosigned)
        done = threading.Event()

        def every(period: float, fn: Any) -> None:
            while not done.is_set():
                fn()
                time.sleep(period)

        def integrator() -> None:
            service.integrate(_uow(engine), clog)

        def witness_job() -> None:
            witnessing.submit(_uow(engine), clog, transport)

        def replica() -> None:
            """What GET /collateral/log/checkpoint answers, looked at every 2 ms."""
            seen = None
            while not done.is_set():
                try:
                    note, size = service.checkpoint(_uow(engine), clog)
                except service.LogNotReady:  # the integrator has not signed one yet
                    time.sleep(0.002)
                    continue
                if note != seen:
                    seen = note
                    try:
                        cosigned = len(open_note(note, key).verified) == 2
                    except NoteError:
                        cosigned = False
                    if cosigned and (not served or size > served[-1][0]):
                        served.append((size, time.perf_counter()))
                time.sleep(0.002)

        threads = [
            threading.Thread(target=every, args=(clog.settings.integrate_seconds, integrator)),
            threading.Thread(target=every, args=(clog.settings.witness_seconds, witness_job)),
            threading.Thread(target=replica),
        ]
        for t in threads:
            t.start()
        try:
            while not served:
                time.sleep(0.05)
            base = served[-1][0]
            committed: list[float] = []
            start = time.perf_counter()
            for i in range(int(seconds * rate)):
                due = start + i / rate
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                ledger.apply_one(
                    LedgerUnitOfWork(engine),
                    MakeTransfer(
                        id=f"c-{i}", debit_wallet_id="x-0", credit_wallet_id=SEG, amount=1
                    ),
                )
                committed.append(time.perf_counter())
            while served[-1][0] < base + len(committed):
                time.sleep(0.05)
        finally:
            done.set()
            for t in threads:
                t.join()
            transport.close()
    lags = []
    for k, at in enumerate(committed):
        first = next(t for size, t in served if size > base + k and t >= at)
        lags.append((first - at) * 1000)
    lags.sort()
    engine.dispose()
    return {
        "cosigned_checkpoint_lag_p50_ms": lags[len(lags) // 2],
        "cosigned_checkpoint_lag_p95_ms": lags[int(len(lags) * 0.95)],
    }


def bench_proofs(engine: sa.Engine, clog: CollateralLog, size: int) -> dict[str, float]:
    uow = _uow(engine)
    rng = random.Random(7)
    inc, con = [], []
    for _ in range(200):
        i = rng.randrange(size)
        t0 = time.perf_counter()
        service.entry_with_proof(uow, clog, i)
        inc.append((time.perf_counter() - t0) * 1000)
        first = rng.randrange(1, size)
        t0 = time.perf_counter()
        service.consistency(uow, clog, first)
        con.append((time.perf_counter() - t0) * 1000)
    return {
        "inclusion_proof_ms_1m": statistics.median(inc),
        "consistency_proof_ms_1m": statistics.median(con),
    }


def _serve(db: str, skey: str, port: int) -> None:
    from gateway.api.app import create_app
    from gateway.messaging.serving import run_server

    settings = load_settings(
        environ={},
        database={"url": db},
        collateral={"rate_per_second": 1e9, "rate_burst": 10**9},
    )
    clog = CollateralLog(SEG, ORIGIN, Signer.from_skey(skey), settings.collateral)
    app = create_app(settings, make_engine(settings.database), collateral=clog)
    run_server(app, "127.0.0.1", port, "warning")


async def _hammer(port: int, path: str, seconds: float, connections: int) -> int:
    """Keep-alive GETs of ``path`` on ``connections`` connections for ``seconds``; a light
    asyncio client, so that the server, not the client, is what is measured."""
    import asyncio

    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    stop_at = time.perf_counter() + seconds

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while time.perf_counter() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:40]
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            n += 1
        writer.close()
        return n

    return sum(await asyncio.gather(*(one() for _ in range(connections))))


def _hammer_process(port: int, path: str, seconds: float, connections: int, out: Any) -> None:
    import asyncio

    out.put(asyncio.run(_hammer(port, path, seconds, connections)))


def bench_checkpoint_rps(port: int, seconds: float, connections: int = 16) -> float:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    client = ctx.Process(
        target=_hammer_process, args=(port, "/collateral/log/checkpoint", seconds, connections, out)
    )
    client.start()
    count = out.get(timeout=seconds + 60)
    client.join(10)
    return float(count) / seconds


def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


@contextmanager
def quiet_chain() -> Iterator[str]:
    """A JSON-RPC endpoint of a chain where the contract never minted: the verifier's chain
    checks cost nothing, so the figure is the log's download, hashing and replay alone."""

    class Rpc(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls = req if isinstance(req, list) else [req]
            answers = {
                "eth_chainId": hex(31337),
                "eth_blockNumber": hex(100),
                "eth_call": "0x" + "00" * 32,
                "eth_getLogs": [],
                "eth_getBlockByNumber": {"number": hex(100), "hash": "0x" + "ab" * 32},
            }
            out = [{"jsonrpc": "2.0", "id": c["id"], "result": answers[c["method"]]} for c in calls]
            body = json.dumps(out if isinstance(req, list) else out[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Rpc)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def bench_verify(url: str, rpc: str, vkey: str, state: Path) -> float:
    from gateway.collateral import verifier

    t0 = time.perf_counter()
    code = verifier.main(
        ["--url", url, "--rpc", rpc, "--log-key", vkey, "--state", str(state), "--json"]
    )
    assert code == 0, f"the verifier refused the log (exit {code})"
    return time.perf_counter() - t0


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
    if not Path(CHROMIUM).exists():
        print(f"page load: skipped ({CHROMIUM} is missing: ops/setup installs it)")
        return {}
    db = tmp / "page.db"
    engine = _engine(db)
    _wallets(engine, 0)
    page_log(engine, 1000)
    drain(engine, _log(signer))
    engine.dispose()
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=_serve, args=(f"sqlite:///{db}", signer.skey(), port))
    server.start()
    try:
        _wait_up(port)
        result = bench_page_load(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.join(10)
    print(
        f"page load (Chromium, 1,000 statements in the chart): p50 {result['page_load_ms']:.0f}"
        f" ms, p95 {result['page_load_p95_ms']:.0f} ms"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", choices=["page"], help="run one part only")
    args = ap.parse_args()

    signer = Signer.generate(ORIGIN)
    result: dict[str, float] = {}
    if args.only == "page":
        with tempfile.TemporaryDirectory() as d:
            result.update(run_page_bench(Path(d), signer))
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result["append_entries_per_s"] = bench_append(tmp, signer)
        print(f"append (durable, batches of 5000): {result['append_entries_per_s']:,.0f} entries/s")
        result.update(bench_pool_and_lag(tmp, signer, args.seconds, 200.0))
        print(
            "pool (8 clients, grouped ledger commits):"
            f" {result['pool_entries_per_s']:,.0f} entries/s"
        )
        print(
            f"checkpoint lag at 200 transfers/s: p50 {result['checkpoint_lag_p50_ms']:.0f} ms,"
            f" p95 {result['checkpoint_lag_p95_ms']:.0f} ms"
        )
        result.update(bench_cosigned_lag(tmp, signer, args.seconds, 200.0))
        print(
            "cosigned checkpoint lag at 200 transfers/s, one local witness:"
            f" p50 {result['cosigned_checkpoint_lag_p50_ms']:.0f} ms,"
            f" p95 {result['cosigned_checkpoint_lag_p95_ms']:.0f} ms"
        )

        db = tmp / "big.db"
        engine = _engine(db)
        _wallets(engine, 0)
        clog = _log(signer, batch_limit=50_000)
        t0 = time.perf_counter()
        balance = pool_bodies(engine, 0, args.entries)
        drain(engine, clog)
        print(f"built a log of {args.entries:,} entries in {time.perf_counter() - t0:.1f} s")
        result.update(bench_proofs(engine, clog, args.entries))
        print(
            f"proofs at {args.entries:,}: inclusion {result['inclusion_proof_ms_1m']:.2f} ms,"
            f" consistency {result['consistency_proof_ms_1m']:.2f} ms (p50 of 200)"
        )

        port = free_port()
        ctx = multiprocessing.get_context("spawn")
        server = ctx.Process(target=_serve, args=(f"sqlite:///{db}", signer.skey(), port))
        server.start()
        try:
            stack = contextlib.ExitStack()
            stack.__enter__()
            _wait_up(port)
            result["checkpoint_rps"] = bench_checkpoint_rps(port, args.seconds)
            print(f"GET checkpoint: {result['checkpoint_rps']:,.0f} requests/s")
            url = f"http://127.0.0.1:{port}"
            state = tmp / "verifier.json"
            rpc = stack.enter_context(quiet_chain())
            result["verify_full_1m_s"] = bench_verify(url, rpc, signer.vkey(), state)
            print(
                f"verify {args.entries:,} entries from scratch: {result['verify_full_1m_s']:.1f} s"
            )
            pool_bodies(engine, args.entries, 100, balance)
            drain(engine, clog)
            time.sleep(1)  # the server's checkpoint cache
            result["verify_incremental_s"] = bench_verify(url, rpc, signer.vkey(), state)
            print(f"verify 100 new entries with state: {result['verify_incremental_s']:.2f} s")
        finally:
            stack.close()
            server.terminate()
            server.join(10)
        engine.dispose()
        result.update(run_page_bench(tmp, signer))
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))


if __name__ == "__main__":
    main()
