"""The collateral log anchored on-chain, end to end: a real gateway process on anvil; every mint
is preceded by a reserve attestation whose (size, root) tree already holds the mint's DT deposit
and whose reserve is the balance the log shows there, a paid redemption is followed by one too,
and the public verifier (a separate process, through anvil's RPC) checks every anchor. A second
history of the same size, signed with the gateway's own log key, is refused: the chain decides."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.collateral import entries as fmt
from gateway.collateral import note
from gateway.collateral.verdict import ExitCode
from gateway.stablecoin.chain import StablecoinChain
from tests.integration.stablecoin.flows.processes import (
    BIN,
    gateway,
    post_mint,
    run_verifier,
)
from tests.support.collateral import Log, Server
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    Deployment,
    setup_exchanges,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain


def _anchors(client: StablecoinChain, start: int) -> list[dict[str, Any]]:
    """Every AttestationPosted event of the contract, in chain order."""
    return [dict(log["args"]) for log in client.logs("AttestationPosted", start)]


def _entries(url: str, size: int) -> list[fmt.Entry]:
    """The log's first ``size`` entries, read through the public API."""
    out = []
    for index in range(size):
        got = httpx.get(f"{url}/v1/collateral/entries/{index}", params={"size": size}).json()
        out.append(fmt.decode(base64.b64decode(got["entry_base64"])))
    return out


def _balance_at(entries: list[fmt.Entry], size: int) -> int:
    balance = 0
    for entry in entries[:size]:
        if isinstance(entry, fmt.DtMovement):
            balance = entry.balance
    return balance


def _index_of(url: str, transfer_id: str) -> int:
    answer = httpx.get(url + "/v1/collateral/entries", params={"transfer_id": transfer_id})
    (dt,) = [e for e in answer.json()["entries"] if e["entry"]["type"] == "dt"]
    return int(dt["index"])


def _root_at(url: str, size: int) -> bytes:
    answer = httpx.get(url + "/v1/collateral/consistency", params={"first": size}).json()
    return base64.b64decode(answer["first_root"])


def test_every_mint_and_redemption_is_anchored_and_the_verifier_checks_the_anchors(
    sqlite_engine: Engine, dep: Deployment, tmp_path: Path
) -> None:
    token = setup_exchanges(sqlite_engine)["exch-1"]
    holder = dep.holders[0]
    auth = {"Authorization": f"Bearer {token}"}
    with gateway(sqlite_engine, dep, tmp_path, []) as (_, url):
        for n, amount in enumerate([1_000_00, 250_00, 40_00]):
            answer = post_mint(url, token, f"m-{n}", amount, holder.address)
            assert answer is not None and answer.json()["state"] == "minted", answer and answer.text
            mint = httpx.get(f"{url}/v1/stablecoin/mints/{answer.json()['id']}", headers=auth)
            deposit = _index_of(url, f"mint-{mint.json()['id']}")
            # The attestation the mint needed anchors a tree that holds its deposit.
            anchor = dep.client.log_anchor()
            assert anchor.size > deposit
            assert _root_at(url, anchor.size) == anchor.root

        dep.client.redeem(holder, 300_00, EXCHANGE_WALLET)
        payout = wait_for(
            lambda: _logged_payout(url),
            "the redemption's payout is not in the log",
            timeout=60,
            interval=0.05,
        )
        wait_for(
            lambda: dep.client.log_anchor().size > payout,
            "no attestation anchored the log after the redemption's payout",
            timeout=60,
            interval=0.05,
        )

        anchors = _anchors(dep.client, dep.start_block)
        assert len(anchors) >= 4
        newest = max(a["logSize"] for a in anchors)
        entries = _entries(url, newest)
        for a in anchors:  # each reserve on chain is the log's balance at its anchored size
            assert a["reserve"] == _balance_at(entries, a["logSize"]), a
            assert a["logRoot"] == _root_at(url, a["logSize"]), a
        assert anchors[-1]["reserve"] == 1_000_00 + 250_00 + 40_00 - 300_00

        result = run_verifier(url, dep, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        checked = report["anchors"]
        assert checked["checked"] + checked["awaiting"] == len(anchors)
        assert checked["checked"] >= len(anchors) - 1

        # Incremental: a further mint, anchored, and the verifier checks the new anchor only.
        more = post_mint(url, token, "m-last", 1_00, holder.address)
        assert more is not None and more.json()["state"] == "minted"

        def verified_newest() -> bool:
            again = run_verifier(url, dep, tmp_path)
            assert again.returncode == 0, again.stdout + again.stderr
            report = json.loads(again.stdout.strip().splitlines()[-1])
            return bool(report["anchors"]["newest_size"] == dep.client.log_anchor().size)

        wait_for(
            verified_newest,
            "the verifier did not check the newest anchor",
            timeout=30,
            interval=0.05,
        )

        # A split view: the log key signs a second history of the same size, one entry's time
        # changed. It is consistent in itself (balances, supply, the chain's events), so only
        # the chain's anchors tell the two apart.
        origin = httpx.get(url + "/v1/collateral/keys").json()["log"]["origin"]
        key_file = tmp_path / ("collateral-" + origin.replace("/", "_") + ".key")
        signer = note.Signer.from_skey(key_file.read_text().strip())
        size = note.Checkpoint.parse(
            httpx.get(url + "/collateral/log/checkpoint").text.split("\n\n")[0] + "\n"
        ).size
        entries = [fmt.encode(e) for e in _entries(url, size)]
        first_dt = next(
            i for i, e in enumerate(entries) if isinstance(fmt.decode(e), fmt.DtMovement)
        )
        moved = fmt.decode(entries[first_dt])
        assert isinstance(moved, fmt.DtMovement)
        entries[first_dt] = fmt.encode(replace(moved, time="2000-01-01T00:00:00.000Z"))
        fork = _SignedAs(signer, entries=entries, origin=origin)
        server = Server(fork.answer)
        try:
            refused = _verify_with_key(server.url, signer.vkey(), dep, tmp_path / "fork")
        finally:
            server.close()
        assert refused.returncode == ExitCode.ANCHOR_MISMATCH, refused.stdout + refused.stderr
        failure = json.loads(refused.stdout.strip().splitlines()[-1])
        first = anchors[0]
        assert f"anchors the log at size {first['logSize']} with root " in failure["message"]
        assert "this is not the history the chain holds" in failure["message"]


@dataclass
class _SignedAs(Log):
    """A log served as tiles whose checkpoint is signed for ``origin`` (the gateway's)."""

    origin: str = ""

    def checkpoint(self) -> bytes:
        frontier, _ = self.tree()
        stamp = (f"timestamp {int(time.time())}",)
        body = note.Checkpoint(self.origin, frontier.size, frontier.root(), stamp).body()
        return note.sign_note(body, [self.signer]).encode()


def _verify_with_key(
    url: str, vkey: str, dep: Deployment, state_dir: Path
) -> subprocess.CompletedProcess[str]:
    state_dir.mkdir(exist_ok=True)
    args = ["--url", url, "--rpc", dep.chain.rpc_url or "", "--log-key", vkey, "--json"]
    return subprocess.run(
        [str(BIN), "verify-collateral", *args, "--state", str(state_dir / "state.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")},
    )


def _logged_payout(url: str) -> int | None:
    """The log index of the first redemption payout, once the log holds one."""
    found = httpx.get(url + "/v1/collateral/statement")
    if found.status_code != 200:
        return None
    size = int(found.json()["tree_size"])
    for index in range(size - 1, -1, -1):
        got = httpx.get(f"{url}/v1/collateral/entries/{index}").json()
        entry = got["entry"]
        if entry["type"] == "dt" and entry["transfer_id"].startswith("redeem-"):
            return index
    return None
