"""Stablecoin throughput through the HTTP API on anvil, and the gas of the hot paths.

Run: .venv/bin/python ops/bench/stablecoin.py [--mints 600] [--concurrency 3] [--redemptions 200]
     [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/dtg_bench]

What it does: starts anvil, deploys the contract, migrates a fresh database (SQLite by default),
opens an exchange wallet with DT and an exchange key, and starts ``dt-gateway serve`` as a
separate process (configured by ``DT_GATEWAY_*`` variables, as in production). Then:

- **mints**: ``--concurrency`` clients POST ``/v1/stablecoin/mints`` (each with its own
  Idempotency-Key) until ``--mints`` are done. The API answers once the mint is confirmed
  on-chain (state ``minted``), so the latency of one request is request-to-confirmed.
  Reserve attestations are posted by the gateway as needed and are included in the figures.
- **redemptions**: four holders burn ``--redemptions`` times in total (``redeem`` with the
  exchange wallet as reference); the figure is redemptions paid in DT by the gateway's watcher
  per second, from the first burn sent to the last payment seen through the API.
- **gas**: ``ops/bench/gas.py``'s figures on the same anvil.

Prints one line per figure and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from gas import measure_gas  # noqa: E402

from gateway import auth  # noqa: E402
from gateway.config import DatabaseSettings  # noqa: E402
from gateway.db import make_engine, upgrade  # noqa: E402
from gateway.ledger import service as ledger  # noqa: E402
from gateway.ledger.model import Issue, OpenWallet, WalletKind  # noqa: E402
from gateway.ledger.store import LedgerUnitOfWork  # noqa: E402
from gateway.messaging.serving import free_port  # noqa: E402
from gateway.stablecoin.chain import StablecoinChain  # noqa: E402
from gateway.stablecoin.devchain import start_anvil  # noqa: E402

EXCHANGE = "bench-exchange"
WALLET = "bench-exchange-dt"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_gateway(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    full.update(env)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dt-gateway"), "serve", "--port", str(port)],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"gateway exited ({process.returncode}); see {log}")
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"gateway did not start; see {log}")


def run_mints(url: str, token: str, holders: list[str], total: int, concurrency: int) -> Any:
    latencies: list[float] = []
    states: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(total))

    def worker(n: int) -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            for i in counter:
                body = {"amount": 1_00, "source_wallet_id": WALLET, "evm_address": holders[i % 4]}
                t0 = time.perf_counter()
                resp = client.post(
                    "/v1/stablecoin/mints", json=body, headers={"Idempotency-Key": f"m{n}-{i}"}
                )
                elapsed = time.perf_counter() - t0
                state = resp.json().get("state", f"http {resp.status_code}")
                with lock:
                    latencies.append(elapsed)
                    states[state] = states.get(state, 0) + 1

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - start
    return wall, latencies, states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mints", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--redemptions", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dtg-bench-sc-"))
    url = args.database_url or f"sqlite:///{tmp / 'gateway.db'}"
    anvil = start_anvil(accounts=10)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        a = anvil.accounts
        admin, operator, attestor = a[0], a[1], a[4]
        holders = a[5:9]
        client = StablecoinChain(anvil.w3, poll_latency=0.002)
        start_block = client.block_number()
        client.deploy(admin, minter=operator.address, attestor=attestor.address)

        engine = make_engine(DatabaseSettings(url=url))
        upgrade(engine)
        ledger.apply(
            LedgerUnitOfWork(engine),
            [
                OpenWallet(id=WALLET, kind=WalletKind.EXCHANGE, owner=EXCHANGE),
                Issue(id="bench-fund", wallet_id=WALLET, amount=10**12),
            ],
        )
        token = auth.create_key(engine, "exchange", subject=EXCHANGE).token
        port = free_port()
        env = {
            "DT_GATEWAY_DATABASE__URL": url,
            "DT_GATEWAY_DATA_DIR": str(tmp),
            "DT_GATEWAY_LOG_LEVEL": "WARNING",
            "DT_GATEWAY_STABLECOIN__RPC_URL": anvil.rpc_url or "",
            "DT_GATEWAY_STABLECOIN__CONTRACT_ADDRESS": client.address,
            "DT_GATEWAY_STABLECOIN__OPERATOR_KEY": operator.key.hex(),
            "DT_GATEWAY_STABLECOIN__ATTESTOR_KEY": attestor.key.hex(),
            "DT_GATEWAY_STABLECOIN__START_BLOCK": str(start_block),
            "DT_GATEWAY_STABLECOIN__POLL_SECONDS": "0.1",
            "DT_GATEWAY_STABLECOIN__RECEIPT_POLL_SECONDS": "0.002",
        }
        gateway = start_gateway(env, port, tmp / "gateway.log")
        base = f"http://127.0.0.1:{port}"
        addresses = [h.address for h in holders]

        run_mints(base, token, addresses, 20, 4)  # warm-up
        wall, latencies, states = run_mints(base, token, addresses, args.mints, args.concurrency)
        minted = states.get("minted", 0)
        mints_per_s = minted / wall
        p50 = percentile(latencies, 50) * 1000
        p99 = percentile(latencies, 99) * 1000

        per_holder = args.redemptions // len(holders)
        total_redemptions = per_holder * len(holders)
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            t0 = time.perf_counter()

            def burn(holder: Any) -> None:
                for _ in range(per_holder):
                    client.redeem(holder, 1_00, WALLET)

            with ThreadPoolExecutor(len(holders)) as pool:
                list(pool.map(burn, holders))
            paid = 0
            while paid < total_redemptions and time.perf_counter() - t0 < 120:
                cursor, paid = 0, 0
                while True:
                    page = api.get(
                        "/v1/stablecoin/redemptions", params={"cursor": cursor, "limit": 500}
                    ).json()
                    paid += sum(r["state"] == "paid" for r in page["redemptions"])
                    if page["next_cursor"] is None:
                        break
                    cursor = page["next_cursor"]
                time.sleep(0.02)
            redemptions_per_s = paid / (time.perf_counter() - t0)

        gas = measure_gas(anvil)
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(15)
        anvil.stop()

    print(f"database: {'sqlite' if url.startswith('sqlite') else 'postgresql'}; chain: anvil")
    print(f"mints: {args.mints} with {args.concurrency} concurrent clients; states {states}")
    print(f"confirmed mints per second      {mints_per_s:8.1f}")
    print(f"mint latency p50 (ms)           {p50:8.1f}")
    print(f"mint latency p99 (ms)           {p99:8.1f}")
    print(f"mint latency mean (ms)          {statistics.fmean(latencies) * 1000:8.1f}")
    print(f"redemptions paid per second     {redemptions_per_s:8.1f}  ({paid} redemptions)")
    for name in ("gas_mint_new_holder", "gas_mint_existing_holder", "gas_transfer", "gas_redeem"):
        print(f"{name:32}{gas[name]:8,}")
    print(
        json.dumps(
            {
                "mints_per_s": round(mints_per_s, 1),
                "mint_p50_ms": round(p50, 1),
                "mint_p99_ms": round(p99, 1),
                "redemptions_per_s": round(redemptions_per_s, 1),
                "gas_mint_new_holder": gas["gas_mint_new_holder"],
                "gas_mint_existing_holder": gas["gas_mint_existing_holder"],
                "gas_transfer": gas["gas_transfer"],
                "gas_redeem": gas["gas_redeem"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
