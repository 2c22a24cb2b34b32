"""Proof of collateral end to end: a real gateway process on anvil, mints, a refund and a
redemption over real HTTP; the public verifier (a separate process, through anvil's RPC) passes;
a kill -9 between a ledger transfer and the checkpoint that would include it loses nothing and
doubles nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.collateral.note import Checkpoint, Signer, Verifier, open_note
from gateway.collateral.runtime import origin_of
from gateway.collateral.verdict import ExitCode
from gateway.ledger import service as ledger
from gateway.ledger.model import MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.serving import free_port
from gateway.stablecoin.contract import MINTER_ROLE
from gateway.stablecoin.runtime import default_segregated_wallet_id
from tests.integration.stablecoin_flows.support import (
    EXCHANGE_WALLET,
    Deployment,
    setup_exchanges,
)

pytestmark = pytest.mark.chain

BIN = Path(sys.executable).parent / "dt-gateway"


def _wait(cond: Callable[[], Any], timeout: float, what: str, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        time.sleep(0.05)
    raise AssertionError(what)


@contextmanager
def gateway(
    engine: Engine,
    dep: Deployment,
    tmp: Path,
    crash: list[str],
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
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

    def healthy() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 30, f"gateway on {port} did not start", proc)
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


def _mint(url: str, token: str, key: str, amount: int, to: str) -> httpx.Response | None:
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


def _logged_transfers(url: str) -> list[str]:
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


def _segregated_movements(engine: Engine, wallet_id: str) -> list[str]:
    page = ledger.history(LedgerUnitOfWork(engine, readonly=True), wallet_id, None, 1000)
    return [e.ref_id for e in page.entries if e.posted_delta != 0]


def _verify(url: str, dep: Deployment, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
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


def test_every_movement_is_logged_once_and_verifies_across_a_kill_before_the_checkpoint(
    sqlite_engine: Engine, dep: Deployment, tmp_path: Path
) -> None:
    tokens = setup_exchanges(sqlite_engine)
    token = tokens["exch-1"]
    holder = dep.holders[0]
    seg = default_segregated_wallet_id(dep.client.address)

    # 1. The integrator dies between pooling a mint's deposit and committing its checkpoint.
    with gateway(sqlite_engine, dep, tmp_path, ["collateral.before_commit"]) as (proc, url):
        _mint(url, token, "m-1", 1_000_00, holder.address)
        assert proc.wait(30) == -signal.SIGKILL

    # 2. Restarted: the pooled deposit is integrated, the mint completes, more movements follow.
    with gateway(sqlite_engine, dep, tmp_path, []) as (_, url):
        first = _mint(url, token, "m-1", 1_000_00, holder.address)  # the retry finds it
        assert first is not None and first.status_code in (200, 201), first and first.text
        _wait(
            lambda: (
                httpx.get(
                    f"{url}/v1/stablecoin/mints/{first.json()['id']}",
                    headers={"Authorization": f"Bearer {token}"},
                ).json()["state"]
                == "minted"
            ),
            60,
            "the first mint did not complete after the restart",
        )
        second = _mint(url, token, "m-2", 500_00, holder.address)
        assert second is not None and second.json()["state"] == "minted", second and second.text
        dep.client.transact(dep.admin, "revokeRole", MINTER_ROLE, dep.operator.address)
        refused = _mint(url, token, "m-3", 70_00, holder.address)
        assert refused is not None and refused.json()["state"] == "refunded", refused.text
        dep.client.transact(dep.admin, "grantRole", MINTER_ROLE, dep.operator.address)
        dep.client.redeem(holder, 300_00, EXCHANGE_WALLET)

        movements = _wait(
            lambda: (m := _segregated_movements(sqlite_engine, seg)) and len(m) == 5 and m,
            60,
            "the redemption was not paid",
        )
        # Every movement of the segregated wallet is in the log, once, in ledger order.
        _wait(lambda: _logged_transfers(url) == movements, 30, "the log misses a movement")
        logged = _logged_transfers(url)
        assert len(logged) == len(set(logged)) == 5

        _wait(  # the statement after the redemption's block is in the log
            lambda: (
                httpx.get(url + "/v1/collateral/statement").status_code == 200
                and httpx.get(url + "/v1/collateral/statement").json()["entry"]["supply"]
                == 1_200_00
            ),
            30,
            "no reserve statement after the redemption",
        )
        result = _verify(url, dep, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["supply"] == 1_200_00 and report["reserve"] == 1_200_00

        # Incremental: a further mint, and the verifier checks only what is new.
        third = _mint(url, token, "m-4", 1_00, holder.address)
        assert third is not None and third.json()["state"] == "minted"
        _wait(
            lambda: (
                httpx.get(url + "/v1/collateral/statement").json()["entry"]["supply"] == 1_201_00
            ),
            30,
            "no reserve statement after the last mint",
        )
        again = _verify(url, dep, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr


def _lease_holder(engine: Engine) -> str | None:
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT holder FROM job_lease WHERE name = 'collateral.integrate'"
        ).first()
    return None if row is None else str(row[0])


@pytest.mark.postgres
def test_two_replicas_one_integrates_and_the_other_takes_over_when_it_is_killed(
    pg_url: str, dep: Deployment, tmp_path: Path
) -> None:
    from tests.conftest import migrated_engine

    engine = migrated_engine(pg_url)
    setup_exchanges(engine)
    seg = default_segregated_wallet_id(dep.client.address)
    ledger.apply_one(
        LedgerUnitOfWork(engine),
        OpenWallet(id=seg, kind=WalletKind.SEGREGATED_COLLATERAL, owner="stablecoin"),
    )

    def deposit(i: int) -> None:
        ledger.apply_one(
            LedgerUnitOfWork(engine),
            MakeTransfer(
                id=f"dep-{i}", debit_wallet_id=EXCHANGE_WALLET, credit_wallet_id=seg, amount=100 + i
            ),
        )

    with gateway(engine, dep, tmp_path, []) as (first, _):
        holder_a = _wait(lambda: _lease_holder(engine), 30, "no replica took the lease")
        with gateway(engine, dep, tmp_path, []) as (_, url_b):
            for i in range(20):
                deposit(i)
            _wait(lambda: len(_logged_transfers(url_b)) == 20, 30, "not integrated")
            assert _lease_holder(engine) == holder_a  # the first replica integrates
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            for i in range(20, 40):
                deposit(i)
            _wait(lambda: len(_logged_transfers(url_b)) == 40, 60, "no replica took over")
            assert _lease_holder(engine) not in (None, holder_a)
            assert _logged_transfers(url_b) == [f"dep-{i}" for i in range(40)]
            result = _verify(url_b, dep, tmp_path)
            assert result.returncode == 0, result.stdout + result.stderr
    engine.dispose()


@contextmanager
def witness(tmp: Path, log_vkey: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """A real ``dt-gateway witness`` process following the log; yields it and what it printed
    (its URL and verifier key)."""
    proc = subprocess.Popen(
        [str(BIN), "witness", "--port", "0", "--data", str(tmp), "--log", log_vkey],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the witness did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _served(url: str, log_key: Verifier, witness_key: Verifier) -> tuple[int, bool]:
    """The served checkpoint's size, and whether the witness's cosignature on it verifies."""
    opened = open_note(httpx.get(url + "/collateral/log/checkpoint").text, [log_key, witness_key])
    return Checkpoint.parse(opened.text).size, witness_key.name in opened.verified


def _statement_index(url: str, supply: int) -> int | None:
    got = httpx.get(url + "/v1/collateral/statement")
    if got.status_code != 200 or got.json()["entry"]["supply"] != supply:
        return None
    return int(got.json()["index"])


def test_a_witness_cosigns_each_checkpoint_and_once_stopped_the_verifier_misses_it(
    sqlite_engine: Engine, dep: Deployment, tmp_path: Path
) -> None:
    tokens = setup_exchanges(sqlite_engine)
    token = tokens["exch-1"]
    holder = dep.holders[0]
    # The log key is made first, so that the witness can follow it from the start.
    log_key = Signer.generate(origin_of("dt-gateway", dep.client.chain_id, dep.client.address))
    with witness(tmp_path / "witness", log_key.vkey()) as (w_proc, w):
        witness_key = Verifier.from_vkey(w["vkey"])
        env = {
            "DT_GATEWAY_COLLATERAL__LOG_KEY": log_key.skey(),
            "DT_GATEWAY_COLLATERAL__WITNESSES": json.dumps([{"url": w["url"], "vkey": w["vkey"]}]),
            "DT_GATEWAY_COLLATERAL__WITNESS_RETRY_MAX_SECONDS": "2",
        }
        with gateway(sqlite_engine, dep, tmp_path, [], env) as (_, url):

            def cosigned_beyond(size: int) -> int | None:
                served, cosigned = _served(url, log_key.verifier(), witness_key)
                return served if cosigned and served > size else None

            # Mints and a redemption, each followed by a cosigned checkpoint that includes it.
            size = 0
            for i, amount in enumerate([1_000_00, 500_00]):
                minted = _mint(url, token, f"w-{i}", amount, holder.address)
                assert minted is not None and minted.json()["state"] == "minted", minted.text
                size = _wait(lambda s=size: cosigned_beyond(s), 30, "the mint was not cosigned")
            dep.client.redeem(holder, 300_00, EXCHANGE_WALLET)
            index = _wait(lambda: _statement_index(url, 1_200_00), 60, "no statement")
            _wait(lambda: cosigned_beyond(index), 30, "the redemption was not cosigned")
            quorum = ("--witness", w["vkey"], "--quorum", "1")
            result = _verify(url, dep, tmp_path, *quorum)
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["supply"] == 1_200_00 and report["cosigned_by"] == [witness_key.name]

            # The witness stops: the gateway keeps serving and minting.
            w_proc.send_signal(signal.SIGTERM)
            assert w_proc.wait(10) == 0
            later = _mint(url, token, "w-late", 1_00, holder.address)
            assert later is not None and later.json()["state"] == "minted", later.text
            index = _wait(lambda: _statement_index(url, 1_201_00), 60, "no statement after")

            def served_bare_beyond(size: int) -> bool:
                served, cosigned = _served(url, log_key.verifier(), witness_key)
                return served > size and not cosigned

            _wait(lambda: served_bare_beyond(index), 30, "the new checkpoint was not served")
            result = _verify(url, dep, tmp_path, *quorum)
            assert result.returncode == ExitCode.MISSING_COSIGNATURES, result.stdout
            failure = json.loads(result.stdout.strip().splitlines()[-1])
            assert failure["failure"] == "MISSING_COSIGNATURES"
            assert witness_key.name in failure["message"]
            # Without requiring the witness, the log itself still verifies.
            assert _verify(url, dep, tmp_path).returncode == 0
