"""The demo's proof-of-collateral step: the public verifier passes on the gateway's log, then
refuses a tampered copy of it served by a stand-in that changed one byte of one entry."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from gateway.collateral import service as collateral
from gateway.collateral import verifier, witnessing
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.collateral.verdict import ExitCode
from gateway.stablecoin import watcher
from gateway.stablecoin.runtime import Stablecoin
from gateway.stablecoin.store import StablecoinUnitOfWork


@contextmanager
def tampered_copy(upstream: str, tamper: Callable[[str, bytes], bytes]) -> Iterator[str]:
    """A server that relays ``upstream``'s GETs, passing every body through ``tamper``."""

    class Relay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            resp = httpx.get(upstream + self.path, timeout=10)
            body = tamper(self.path, resp.content)
            self.send_response(resp.status_code)
            self.send_header("Content-Type", resp.headers.get("content-type", "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _raise_first_amount(path: str, body: bytes) -> bytes:
    """Entry bundle 0 with the first entry's amount one digit larger (same length)."""
    if not path.startswith("/collateral/log/tile/entries/"):
        return body
    at = body.index(b'"amount":') + len(b'"amount":')
    digit = body[at : at + 1]
    return body[:at] + (b"2" if digit != b"2" else b"3") + body[at + 1 :]


def collateral_demo(
    url: str,
    rpc_url: str | None,
    engine: Engine,
    sc: Stablecoin,
    root: Path,
    say: Callable[[str, str], None],
    expect: Callable[[bool, str], None],
) -> None:
    print("Proof of collateral")
    clog = sc.collateral
    assert clog is not None
    # The jobs a server runs: the chain watcher logs the chain's side and a reserve statement,
    # the integrator sequences the pool and signs a checkpoint.
    watcher.poll(partial(StablecoinUnitOfWork, engine), sc)
    done = collateral.integrate(partial(CollateralUnitOfWork, engine), clog)
    say("log integrated and signed", f"{done.size} entries, origin {clog.origin}")
    witnesses = _cosign(engine, clog, say, expect)
    vkey = httpx.get(url + "/v1/collateral/keys", timeout=10).json()["log"]["vkey"]
    expect(vkey == clog.vkey, "the served key is not the log's")
    page = httpx.get(url + "/collateral", timeout=10)
    expect(page.status_code == 200 and 'id="reserve"' in page.text, "the page shows no reserve")
    say("the public page", f"{url}/collateral (reserve, supply, chart, checkpoint, movements)")
    if not rpc_url:
        say("verification skipped", "the in-process chain has no RPC endpoint for the verifier")
        return
    args = ["--rpc", rpc_url, "--log-key", vkey, *witnesses]
    command = f"dt-gateway verify-collateral --url {url} --rpc {rpc_url} --log-key '{vkey}'"
    command += "".join(f" '{a}'" if "+" in a else f" {a}" for a in witnesses)
    print(f"  $ {command}")
    state = root / "verifier-state.json"
    code = verifier.main(["--url", url, *args, "--state", str(state)])
    expect(code == ExitCode.OK, f"the verifier refused the gateway's own log (exit {code})")
    say("verified", "signature, cosignature, tree, replay and the chain's events all check out")
    anchor = sc.chain.log_anchor()
    expect(anchor.size > 0, "no reserve attestation anchored the log on chain")
    say("anchored on chain", f"logAnchor(): the tree of {anchor.size} entries, as verified")
    with tampered_copy(url, _raise_first_amount) as fake:
        print(f"  a copy of the log with one amount changed, served at {fake}:")
        code = verifier.main(["--url", fake, *args])
    expect(code == ExitCode.ROOT_MISMATCH, f"the tampered copy was not caught (exit {code})")
    say("tampered copy refused", f"exit {code} ({ExitCode(code).name})")


def _cosign(
    engine: Engine,
    clog: CollateralLog,
    say: Callable[[str, str], None],
    expect: Callable[[bool, str], None],
) -> list[str]:
    """What the witnessing job does: the newest checkpoint is put to the log's witnesses, and
    served with their cosignatures. Returns the verifier's arguments that require one of
    those cosignatures (``--witness ... --quorum 1``)."""
    if not clog.witnesses:
        return []
    transport = witnessing.HttpTransport(timeout=10)
    try:
        done = witnessing.submit(partial(CollateralUnitOfWork, engine), clog, transport)
    finally:
        transport.close()
    expect(len(done.cosigned) == len(clog.witnesses), f"not cosigned: {clog.peer_status}")
    say("checkpoint cosigned", f"by {', '.join(p.verifier.name for p in clog.witnesses)}")
    return [arg for p in clog.witnesses for arg in ("--witness", p.verifier.vkey())] + [
        "--quorum",
        "1",
    ]


__all__ = ["collateral_demo", "tampered_copy"]
