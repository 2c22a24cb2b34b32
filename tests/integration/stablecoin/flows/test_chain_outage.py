"""A real ``dt-gateway serve`` started while its chain node is down: it serves what needs no
chain (the ledger), is not ready, answers the chain's routes 503 without naming the node, logs
each failing job's first failure with its traceback and not again at every run, and picks the
chain up when the node is back (restored from a dump: its blocks, not its past states)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.messaging.serving import free_port
from gateway.stablecoin.chain_errors import ChainUnavailable
from gateway.stablecoin.devchain import ANVIL_CHAIN_ID
from tests.integration.stablecoin.flows.node import Node
from tests.integration.stablecoin.flows.processes import answering
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    FUNDED,
    deploy,
    setup_exchanges,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain

BIN = Path(sys.executable).parent / "dt-gateway"
WATCHER = "stablecoin.watch_redemptions"


@contextmanager
def _dead_node(port: int) -> Iterator[Callable[[], int]]:
    """The port of a node that is down, answering nothing: each connection is accepted and
    closed at once, and counted (a request of the gateway's that failed)."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.05)
    accepted = 0
    done = threading.Event()

    def refuse() -> None:
        nonlocal accepted
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.close()
            accepted += 1

    thread = threading.Thread(target=refuse, name="dead-node")
    thread.start()
    try:
        yield lambda: accepted
    finally:
        done.set()
        thread.join(5)
        server.close()


def _records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_replica_started_during_a_chain_outage_serves_and_picks_the_chain_up(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    engine = sqlite_engine
    node = Node(tmp_path)
    node.start()
    try:
        dep = deploy(node.devchain())
        tokens = setup_exchanges(engine)
        node.kill()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
        env.update(dep.env())
        env.update(
            {
                "DT_GATEWAY_STABLECOIN__CHAIN_ID": str(ANVIL_CHAIN_ID),
                "DT_GATEWAY_DATABASE__URL": engine.url.render_as_string(hide_password=False),
                "DT_GATEWAY_DATA_DIR": str(tmp_path),
                "DT_GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        log_path = tmp_path / "gateway.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(BIN), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
            )
        try:
            _served_while_down(url, tokens, node, log_path, proc)
            node.start()
            answering(url, proc, "/ready")
            exchange = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {tokens[EXCHANGE]}"}, timeout=60
            )
            with exchange:
                mint = exchange.post(
                    "/v1/stablecoin/mints",
                    json={
                        "amount": 5_00,
                        "source_wallet_id": EXCHANGE_WALLET,
                        "evm_address": (dep.holders[0].address),
                    },
                    headers={"Idempotency-Key": "after-the-outage"},
                )
                assert mint.status_code == 201, mint.text
                path = f"/v1/stablecoin/mints/{mint.json()['id']}"
                wait_for(
                    lambda: exchange.get(path).json()["state"] == "minted",
                    "no mint",
                    proc=proc,
                    timeout=60,
                    tolerate=(httpx.HTTPError,),
                    interval=0.05,
                )
            recovered = f"job {WATCHER} recovered"
            wait_for(
                lambda: recovered in log_path.read_text(),
                "no recovery logged",
                proc=proc,
                timeout=60,
                interval=0.05,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        node.stop()

    records = _records(log_path)
    about_watcher = [r for r in records if r["msg"].startswith(f"job {WATCHER} ")]
    with_traceback = [r for r in about_watcher if "exc" in r]
    assert [r["msg"] for r in with_traceback] == [f"job {WATCHER} failed"]
    assert ChainUnavailable.__name__ in with_traceback[0]["exc"]
    # Then a summary line every 30 s at most (the outage lasts seconds), then the recovery.
    assert about_watcher[0] is with_traceback[0]
    assert about_watcher[-1]["msg"].startswith(f"job {WATCHER} recovered after ")
    failures = int(about_watcher[-1]["msg"].split(" recovered after ")[1].split()[0])
    assert failures >= 10, about_watcher[-1]["msg"]  # one traceback for all of them
    assert all(r["msg"].startswith(f"job {WATCHER} still failing") for r in about_watcher[1:-1])
    # The full reason, with the node's address, is for the log only.
    assert any(f"port={node.port}" in r["msg"] for r in records)


def _served_while_down(
    url: str,
    tokens: dict[str, str],
    node: Node,
    log_path: Path,
    proc: subprocess.Popen[bytes],
) -> None:
    answering(url, proc)
    operator = {"Authorization": f"Bearer {tokens['operator']}"}
    wallet = httpx.get(f"{url}/v1/wallets/{EXCHANGE_WALLET}", headers=operator)
    assert wallet.status_code == 200, wallet.text
    assert wallet.json()["posted"] == FUNDED

    ready = httpx.get(url + "/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert not checks["chain"]["ok"] and checks["database"]["ok"]

    mint = httpx.post(
        url + "/v1/stablecoin/mints",
        json={"amount": 5_00, "source_wallet_id": EXCHANGE_WALLET, "evm_address": "0x" + "22" * 20},
        headers={
            "Idempotency-Key": "during-the-outage",
            "Authorization": f"Bearer {tokens[EXCHANGE]}",
        },
    )
    assert mint.status_code == 503, mint.text
    problem = mint.json()
    assert problem["code"] == "CHAIN_UNAVAILABLE"
    assert problem["detail"] == ChainUnavailable.title
    for answer in (mint, ready):
        assert "127.0.0.1" not in answer.text and str(node.port) not in answer.text

    # The jobs fail at every run meanwhile (every 0.1 s): wait for a few dozen of their
    # requests to the node to have failed.
    wait_for(
        lambda: f"job {WATCHER} failed" in log_path.read_text(),
        "no job failure",
        proc=proc,
        timeout=60,
        interval=0.05,
    )
    with _dead_node(node.port) as refused:
        wait_for(
            lambda: refused() >= 40,
            "the jobs stopped asking the node",
            proc=proc,
            timeout=60,
            interval=0.05,
        )
