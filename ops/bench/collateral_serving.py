"""The proof-of-collateral benchmark's read side (``ops/bench/collateral.py``): what serving a
big log costs the gateway, and what checking it costs a verifier.

- :func:`bench_proofs`: the server computing inclusion and consistency proofs (p50 of 200);
- :func:`run_served_bench`: the gateway's app in a process of its own (:func:`serve`) over
  that log: ``GET /collateral/log/checkpoint`` per second from a light client in another
  process, then the public verifier over the whole log from scratch and again, with its
  state, after 100 new entries, against a chain that never minted (:func:`quiet_chain`).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import random
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from collateral_logs import ORIGIN, SEG, drain, pool_bodies, uow_factory

from gateway.collateral import service
from gateway.collateral.note import Signer
from gateway.collateral.runtime import CollateralLog
from gateway.config import load_settings
from gateway.db import make_engine
from gateway.messaging.serving import free_port


def bench_proofs(engine: sa.Engine, clog: CollateralLog, size: int) -> dict[str, float]:
    """p50 ms of 200 inclusion and 200 consistency proofs at random places of the log."""
    uow = uow_factory(engine)
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


def serve(db: str, skey: str, port: int) -> None:
    """The gateway's app on ``port`` over the log in ``db`` (a process's target: its rate
    limits out of the way)."""
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


def start_server(db: Path, signer: Signer) -> tuple[Any, int]:
    """:func:`serve` over the SQLite file ``db`` in a spawned process; it and its port."""
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=serve, args=(f"sqlite:///{db}", signer.skey(), port))
    server.start()
    return server, port


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
    """``GET /collateral/log/checkpoint`` answered per second, from a client process."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    client = ctx.Process(
        target=_hammer_process, args=(port, "/collateral/log/checkpoint", seconds, connections, out)
    )
    client.start()
    count = out.get(timeout=seconds + 60)
    client.join(10)
    return float(count) / seconds


def wait_up(port: int) -> None:
    """Until the gateway on ``port`` answers ``GET /health`` (30 s at most)."""
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
    """Seconds the public verifier takes to check the log at ``url`` (its state in ``state``)."""
    from gateway.collateral import verifier

    t0 = time.perf_counter()
    code = verifier.main(
        ["--url", url, "--rpc", rpc, "--log-key", vkey, "--state", str(state), "--json"]
    )
    assert code == 0, f"the verifier refused the log (exit {code})"
    return time.perf_counter() - t0


def run_served_bench(
    tmp: Path,
    db: Path,
    engine: sa.Engine,
    clog: CollateralLog,
    signer: Signer,
    entries: int,
    balance: int,
    seconds: float,
) -> dict[str, float]:
    """Over the log of ``entries`` in ``db`` (its DT balance ``balance``), served by the
    gateway: checkpoints per second for ``seconds``, the verifier from scratch, and the
    verifier with its state after 100 more entries. Prints each figure."""
    result: dict[str, float] = {}
    server, port = start_server(db, signer)
    try:
        wait_up(port)
        result["checkpoint_rps"] = bench_checkpoint_rps(port, seconds)
        print(f"GET checkpoint: {result['checkpoint_rps']:,.0f} requests/s")
        url = f"http://127.0.0.1:{port}"
        state = tmp / "verifier.json"
        with quiet_chain() as rpc:
            result["verify_full_1m_s"] = bench_verify(url, rpc, signer.vkey(), state)
            print(f"verify {entries:,} entries from scratch: {result['verify_full_1m_s']:.1f} s")
            pool_bodies(engine, entries, 100, balance)
            drain(engine, clog)
            time.sleep(1)  # the server's checkpoint cache
            result["verify_incremental_s"] = bench_verify(url, rpc, signer.vkey(), state)
            print(f"verify 100 new entries with state: {result['verify_incremental_s']:.2f} s")
    finally:
        server.terminate()
        server.join(10)
    return result
