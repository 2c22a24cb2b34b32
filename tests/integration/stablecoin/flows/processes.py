"""Real gateway processes for the crash and proof-of-collateral tests on anvil: start
``dt-gateway serve`` with a deployment's settings (and crash points), mint over HTTP, read the
log's dt entries from its public tiles, and run the public verifier as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine

from gateway.messaging.serving import free_port
from tests.support.stablecoin import EXCHANGE_WALLET, Deployment
from tests.support.waiting import wait_for

BIN = Path(sys.executable).parent / "dt-gateway"


def answering(
    url: str, proc: subprocess.Popen[bytes], path: str = "/health", timeout: float = 60
) -> None:
    """Once the gateway ``proc`` serving at ``url`` answers ``path`` with 200."""
    wait_for(
        lambda: httpx.get(url + path, timeout=1).status_code == 200,
        f"{url}{path} answering",
        timeout=timeout,
        proc=proc,
        tolerate=(httpx.HTTPError,),
        interval=0.05,
    )


@contextmanager
def gateway(
    engine: Engine,
    dep: Deployment,
    tmp: Path,
    crash: list[str],
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``dt-gateway serve`` on a free port with ``dep``'s settings, ``engine``'s database,
    ``crash`` points and ``extra_env``, once healthy: (the process, its URL). Its output goes
    to ``tmp/gateway-<port>.log``; it is stopped (SIGTERM, then SIGKILL) at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    env.update(dep.env())
    env.update(
        {
            "DT_GATEWAY_DATABASE__URL": engine.url.render_as_string(hide_password=False),
            "DT_GATEWAY_DATA_DIR": str(tmp),
            "DT_GATEWAY_LOG_LEVEL": "WARNING",
            "DT_GATEWAY_FAULTS__CRASH_POINTS": json.dumps(crash),
            **(extra_env or {}),
        }
    )
    log = open(tmp / f"gateway-{port}.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        answering(url, proc, timeout=30)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def post_mint(url: str, token: str, key: str, amount: int, to: str) -> httpx.Response | None:
    """POST a mint; None when the gateway died while answering (a crash test kills it)."""
    try:
        return httpx.post(
            url + "/v1/stablecoin/mints",
            json={"amount": amount, "source_wallet_id": EXCHANGE_WALLET, "evm_address": to},
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError:
        return None


def logged_transfers(url: str) -> list[str]:
    """The DT transfer ids of the log's dt entries, in log order, read from the public tiles
    through the verifier's own code (no server-side convenience trusted)."""
    from gateway.collateral import tlog
    from gateway.collateral.note import Checkpoint

    note = httpx.get(url + "/collateral/log/checkpoint").text
    size = Checkpoint.parse(note.split("\n\n", 1)[0] + "\n").size
    bodies: list[bytes] = []
    for n in range(0, (size + 255) // 256):
        width = min(256, size - n * 256)
        path = tlog.tile_path("entries", n, None if width == 256 else width)
        bodies.extend(tlog.decode_bundle(httpx.get(f"{url}/collateral/log/{path}").content))
    return [e["transfer_id"] for b in bodies if (e := json.loads(b))["type"] == "dt"]


def run_verifier(
    url: str, dep: Deployment, tmp: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    vkey = httpx.get(url + "/v1/collateral/keys").json()["log"]["vkey"]
    return subprocess.run(
        [
            str(BIN),
            "verify-collateral",
            "--url",
            url,
            "--rpc",
            dep.chain.rpc_url or "",
            "--log-key",
            vkey,
            "--state",
            str(tmp / "verifier-state.json"),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")},
    )
