"""Proof of collateral end to end: a real gateway process on anvil, mints, a refund and a
redemption over real HTTP; the public verifier (a separate process, through anvil's RPC) passes;
a kill -9 between a ledger transfer and the checkpoint that would include it loses nothing and
doubles nothing."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.collateral.note import Checkpoint, Signer, Verifier, open_note
from gateway.collateral.runtime import origin_of
from gateway.collateral.verdict import ExitCode
from gateway.ledger import service as ledger
from gateway.ledger.model import MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.stablecoin.contract import MINTER_ROLE
from gateway.stablecoin.runtime import default_segregated_wallet_id
from tests.integration.stablecoin.flows.processes import (
    BIN,
    gateway,
    logged_transfers,
    post_mint,
    run_verifier,
)
from tests.support.databases import PgDatabases
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    Deployment,
    setup_exchanges,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain


def _segregated_movements(engine: Engine, wallet_id: str) -> list[str]:
    page = ledger.history(LedgerUnitOfWork(engine, readonly=True), wallet_id, None, 1000)
    return [e.ref_id for e in page.entries if e.posted_delta != 0]


def test_every_movement_is_logged_once_and_verifies_across_a_kill_before_the_checkpoint(
    sqlite_engine: Engine, dep: Deployment, tmp_path: Path
) -> None:
    tokens = setup_exchanges(sqlite_engine)
    token = tokens["exch-1"]
    holder = dep.holders[0]
    seg = default_segregated_wallet_id(dep.client.address)

    # 1. The integrator dies between pooling a mint's deposit and committing its checkpoint.
    crash = ["collateral.movement_before_commit"]
    with gateway(sqlite_engine, dep, tmp_path, crash) as (proc, url):
        post_mint(url, token, "m-1", 1_000_00, holder.address)
        assert proc.wait(30) == -signal.SIGKILL

    # 2. Restarted: the pooled deposit is integrated, the mint completes, more movements follow.
    with gateway(sqlite_engine, dep, tmp_path, []) as (_, url):
        first = post_mint(url, token, "m-1", 1_000_00, holder.address)  # the retry finds it
        assert first is not None and first.status_code in (200, 201), first and first.text
        wait_for(
            lambda: (
                httpx.get(
                    f"{url}/v1/stablecoin/mints/{first.json()['id']}",
                    headers={"Authorization": f"Bearer {token}"},
                ).json()["state"]
                == "minted"
            ),
            "the first mint did not complete after the restart",
            timeout=60,
            interval=0.05,
        )
        second = post_mint(url, token, "m-2", 500_00, holder.address)
        assert second is not None and second.json()["state"] == "minted", second and second.text
        dep.client.transact(dep.admin, "revokeRole", MINTER_ROLE, dep.operator.address)
        refused = post_mint(url, token, "m-3", 70_00, holder.address)
        assert refused is not None and refused.json()["state"] == "refunded", refused.text
        dep.client.transact(dep.admin, "grantRole", MINTER_ROLE, dep.operator.address)
        dep.client.redeem(holder, 300_00, EXCHANGE_WALLET)

        movements = wait_for(
            lambda: (m := _segregated_movements(sqlite_engine, seg)) and len(m) == 5 and m,
            "the redemption was not paid",
            timeout=60,
            interval=0.05,
        )
        # Every movement of the segregated wallet is in the log, once, in ledger order.
        wait_for(
            lambda: logged_transfers(url) == movements,
            "the log misses a movement",
            timeout=30,
            interval=0.05,
        )
        logged = logged_transfers(url)
        assert len(logged) == len(set(logged)) == 5

        # The statement after the redemption's block is in the log.
        wait_for(
            lambda: (
                httpx.get(url + "/v1/collateral/statement").status_code == 200
                and httpx.get(url + "/v1/collateral/statement").json()["entry"]["supply"]
                == 1_200_00
            ),
            "no reserve statement after the redemption",
            timeout=30,
            interval=0.05,
        )
        result = run_verifier(url, dep, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["supply"] == 1_200_00 and report["reserve"] == 1_200_00

        # Incremental: a further mint, and the verifier checks only what is new.
        third = post_mint(url, token, "m-4", 1_00, holder.address)
        assert third is not None and third.json()["state"] == "minted"
        wait_for(
            lambda: (
                httpx.get(url + "/v1/collateral/statement").json()["entry"]["supply"] == 1_201_00
            ),
            "no reserve statement after the last mint",
            timeout=30,
            interval=0.05,
        )
        again = run_verifier(url, dep, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr


def _lease_holder(engine: Engine) -> str | None:
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT holder FROM job_lease WHERE name = 'collateral.integrate'"
        ).first()
    return None if row is None else str(row[0])


@pytest.mark.postgres
def test_two_replicas_one_integrates_and_the_other_takes_over_when_it_is_killed(
    pg_database_factory: PgDatabases, dep: Deployment, tmp_path: Path
) -> None:
    from tests.support.databases import migrated_engine

    engine = migrated_engine(pg_database_factory(migrated=True))
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
        holder_a = wait_for(
            lambda: _lease_holder(engine), "no replica took the lease", timeout=30, interval=0.05
        )
        with gateway(engine, dep, tmp_path, []) as (_, url_b):
            for i in range(20):
                deposit(i)
            wait_for(
                lambda: len(logged_transfers(url_b)) == 20,
                "not integrated",
                timeout=30,
                interval=0.05,
            )
            assert _lease_holder(engine) == holder_a  # the first replica integrates
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            for i in range(20, 40):
                deposit(i)
            wait_for(
                lambda: len(logged_transfers(url_b)) == 40,
                "no replica took over",
                timeout=60,
                interval=0.05,
            )
            assert _lease_holder(engine) not in (None, holder_a)
            assert logged_transfers(url_b) == [f"dep-{i}" for i in range(40)]
            result = run_verifier(url_b, dep, tmp_path)
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
                minted = post_mint(url, token, f"w-{i}", amount, holder.address)
                assert minted is not None and minted.json()["state"] == "minted", minted.text
                size = wait_for(
                    lambda s=size: cosigned_beyond(s),
                    "the mint was not cosigned",
                    timeout=30,
                    interval=0.05,
                )
            dep.client.redeem(holder, 300_00, EXCHANGE_WALLET)
            index = wait_for(
                lambda: _statement_index(url, 1_200_00), "no statement", timeout=60, interval=0.05
            )
            wait_for(
                lambda: cosigned_beyond(index),
                "the redemption was not cosigned",
                timeout=30,
                interval=0.05,
            )
            quorum = ("--witness", w["vkey"], "--quorum", "1")
            result = run_verifier(url, dep, tmp_path, *quorum)
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["supply"] == 1_200_00 and report["cosigned_by"] == [witness_key.name]

            # The witness stops: the gateway keeps serving and minting.
            w_proc.send_signal(signal.SIGTERM)
            assert w_proc.wait(10) == 0
            later = post_mint(url, token, "w-late", 1_00, holder.address)
            assert later is not None and later.json()["state"] == "minted", later.text
            index = wait_for(
                lambda: _statement_index(url, 1_201_00),
                "no statement after",
                timeout=60,
                interval=0.05,
            )

            def served_bare_beyond(size: int) -> bool:
                served, cosigned = _served(url, log_key.verifier(), witness_key)
                return served > size and not cosigned

            wait_for(
                lambda: served_bare_beyond(index),
                "the new checkpoint was not served",
                timeout=30,
                interval=0.05,
            )
            result = run_verifier(url, dep, tmp_path, *quorum)
            assert result.returncode == ExitCode.MISSING_COSIGNATURES, result.stdout
            failure = json.loads(result.stdout.strip().splitlines()[-1])
            assert failure["failure"] == "MISSING_COSIGNATURES"
            assert witness_key.name in failure["message"]
            # Without requiring the witness, the log itself still verifies.
            assert run_verifier(url, dep, tmp_path).returncode == 0
