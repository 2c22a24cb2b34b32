"""The public verifier against a log and a chain served over HTTP: it passes an honest gateway and
names each way a dishonest one can lie with its own exit code and message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import cli
from gateway.collateral import entries as fmt
from gateway.collateral import note, verifier
from gateway.collateral.verdict import ExitCode
from tests.support.collateral import (
    CONTRACT,
    EXCHANGE,
    ORIGIN,
    Chain,
    Event,
    History,
    Log,
    Server,
    serving,
)

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def history() -> History:
    """Two mints, a statement, a redemption and its payout, a statement, one mint after it."""
    h = History(Log(note.Signer.generate(ORIGIN)), Chain())
    h.mint(1000)
    h.mint(500)
    h.statement()
    h.redeem(300)
    h.statement()
    h.mint(200)
    return h


@pytest.fixture
def run(history: History, capsys: pytest.CaptureFixture[str]) -> Run:
    """Runs the verifier in this process against ``history``; returns (code, stdout, stderr)."""

    def run(*extra: str, key: str | None = None) -> tuple[int, str, str]:
        with serving(history) as (url, rpc):
            key = key or history.log.signer.vkey()
            code = verifier.main(["--url", url, "--rpc", rpc, "--log-key", key, *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return run


# The verifier as started from a terminal: SIGINT at its default (Ctrl-C raises
# KeyboardInterrupt) whatever the suite was started from (a background job ignores SIGINT, and
# its children inherit that).
_FROM_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
    " sys.argv[0] = 'verifier';"
    " runpy.run_module('gateway.collateral.verifier', run_name='__main__')"
)


def _verifier(*args: str, stdout: int | None = None) -> subprocess.Popen[str]:
    root = Path(__file__).parents[3]
    return subprocess.Popen(
        [sys.executable, "-c", _FROM_A_TERMINAL, *args],
        stdout=stdout,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


def _dt(data: bytes, **changes: int) -> bytes:
    entry = fmt.decode(data)
    assert isinstance(entry, fmt.DtMovement)
    return fmt.encode(fmt.DtMovement(**{**entry.__dict__, **changes}))


def test_an_honest_log_verifies_with_a_short_report(run: Run) -> None:
    code, out, err = run()
    assert (code, err) == (0, "")
    assert f"collateral verified: {ORIGIN}" in out
    assert "10 entries, 10 new checked" in out
    assert "reserve     1,400 tiyn (14.00 KZT)" in out
    assert "3 Minted/Redeemed events match the log one to one; 2 statements" in out
    assert "mint/burn entries after the newest statement: 1" in out


def test_json_output_is_one_json_object(run: Run) -> None:
    code, out, _ = run("--json")
    assert code == 0
    assert out.count("\n") == 1
    report = json.loads(out)
    assert report["ok"] is True
    assert report["exit"] == 0
    assert (report["size"], report["reserve"], report["supply"]) == (10, 1400, 1400)
    assert report["supply_now"] == 1400
    assert report["chain"]["events"] == 3


def test_a_failure_in_json_is_one_json_object_too(history: History, run: Run) -> None:
    history.log.timestamp = lambda: int(time.time()) - 3600
    code, out, _ = run("--json")
    assert code == ExitCode.STALE
    failure = json.loads(out)
    assert failure["ok"] is False
    assert (failure["exit"], failure["failure"]) == (11, "STALE")
    assert "more than the allowed 300 s" in failure["message"]


def test_an_amount_changed_and_re_signed_fails_the_balance_replay(
    history: History, run: Run
) -> None:
    history.log.entries[2] = _dt(history.log.entries[2], amount=600)  # the log signs the lie
    code, _, err = run()
    assert code == ExitCode.BALANCE
    assert (
        "entry 2 (dt transfer t-2): balance expected 1600 (previous 1000 +600), found 1500" in err
    )


def test_a_balance_changed_and_re_signed_fails_the_balance_replay(
    history: History, run: Run
) -> None:
    history.log.entries[0] = _dt(history.log.entries[0], balance=5000)
    code, _, err = run()
    assert code == ExitCode.BALANCE
    assert "entry 0 (dt transfer t-1): balance expected 1000 (previous 0 +1000), found 5000" in err


def test_an_amount_changed_without_re_signing_fails_the_root(history: History, run: Run) -> None:
    history.log.replaced[2] = _dt(history.log.entries[2], amount=600, balance=1600)
    code, _, err = run()
    assert code == ExitCode.ROOT_MISMATCH
    assert "entry 2 in tile/entries/000.p/10 hashes to" in err
    assert "but the log's tile/0/000.p/10 holds" in err


def test_a_forged_checkpoint_signature_is_refused(history: History, run: Run) -> None:
    lines = history.log.checkpoint().decode().split("\n")
    body, signature = lines[:-2], lines[-2]
    flipped = signature[:-3] + ("A" if signature[-3] != "A" else "B") + signature[-2:]
    history.log.checkpoint_override = "\n".join([*body, flipped, ""]).encode()
    code, _, err = run()
    assert code == ExitCode.BAD_SIGNATURE
    assert "does not verify" in err


def test_a_checkpoint_with_its_size_changed_is_refused(history: History, run: Run) -> None:
    text = history.log.checkpoint().decode()
    history.log.checkpoint_override = text.replace(
        f"\n{len(history.log.entries)}\n", "\n9\n", 1
    ).encode()
    code, _, err = run()
    assert code == ExitCode.BAD_SIGNATURE
    assert "does not verify" in err


def test_a_checkpoint_signed_by_another_key_of_the_same_name_is_refused(
    history: History, run: Run
) -> None:
    history.log.signer = note.Signer.generate(ORIGIN)
    code, _, err = run(key=note.Signer.generate(ORIGIN).vkey())
    assert code == ExitCode.BAD_SIGNATURE
    assert "no verified signature from a known key" in err


def test_a_stale_checkpoint_is_refused(history: History, run: Run) -> None:
    history.log.timestamp = lambda: int(time.time()) - 301 - 5
    code, _, err = run("--max-age", "300")
    assert code == ExitCode.STALE
    assert "more than the allowed 300 s" in err


def test_a_checkpoint_from_the_future_is_refused(history: History, run: Run) -> None:
    history.log.timestamp = lambda: int(time.time()) + 3600
    code, _, err = run()
    assert code == ExitCode.STALE
    assert "s in the future" in err


def test_a_truncated_log_is_caught_against_the_state_file(
    history: History, run: Run, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    assert run("--state", state)[0] == 0
    del history.log.entries[-2:]
    code, _, err = run("--state", state)
    assert code == ExitCode.TRUNCATED
    assert "the log has 8 entries, fewer than the 10 of the last verified checkpoint" in err


def test_history_rewritten_under_a_longer_tree_is_caught(
    history: History, run: Run, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    assert run("--state", state)[0] == 0
    history.log.entries[0] = _dt(history.log.entries[0], transfer_id="other")
    history.statement()
    code, _, err = run("--state", state)
    assert code == ExitCode.REWRITTEN
    assert "does not extend the last verified one (size 10" in err


def test_history_rewritten_at_the_same_size_is_caught(
    history: History, run: Run, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    assert run("--state", state)[0] == 0
    history.log.entries[0] = _dt(history.log.entries[0], transfer_id="other")
    code, _, err = run("--state", state)
    assert code == ExitCode.REWRITTEN
    assert "the log of 10 entries now has root" in err


def test_a_new_entry_changed_without_re_signing_is_caught_in_an_incremental_run(
    history: History, run: Run, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    assert run("--state", state)[0] == 0
    history.mint(50)
    history.log.replaced[10] = _dt(history.log.entries[10], amount=60, balance=1460)
    code, _, err = run("--state", state)
    assert code == ExitCode.ROOT_MISMATCH
    assert "entry 10 in tile/entries/000.p/12 hashes to" in err


def test_a_root_mismatch_without_tiles_to_explain_it_is_still_a_root_mismatch(
    history: History, run: Run, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    assert run("--state", state)[0] == 0
    history.mint(50)
    history.log.replaced[10] = _dt(history.log.entries[10], amount=60, balance=1460)
    history.log.hidden = {"tile/0/000.p/12"}
    code, _, err = run("--state", state)
    assert code == ExitCode.ROOT_MISMATCH
    assert "the log's tiles that would tell why could not be read (GET " in err


def test_an_on_chain_mint_with_no_entry_is_caught(history: History, run: Run) -> None:
    history.dt(70)
    missing = history.chain.add("mint", EXCHANGE, 70, "0x" + "77" * 32)
    history.statement()
    code, _, err = run()
    assert code == ExitCode.MISSING_FROM_LOG
    assert f"Minted event tx {missing.tx_hash} log 0 (block {missing.block}, amount 70" in err
    assert "has no entry in the log before the statement at entry 11" in err


def test_an_entry_for_a_mint_that_is_not_on_chain_is_caught(history: History, run: Run) -> None:
    history.dt(70)
    block = history.chain.mine()
    ghost = Event("mint", block, "0x" + "99" * 32, 0, EXCHANGE, 70, "0x" + "88" * 32)
    history.log_event(ghost)
    history.statement()
    code, _, err = run()
    assert code == ExitCode.NOT_ON_CHAIN
    assert f"entry 11 (mint tx {ghost.tx_hash} log 0, block {block}): the contract has no" in err


def test_an_entry_whose_amount_differs_from_the_chain_is_caught(history: History, run: Run) -> None:
    history.dt(70)
    event = history.chain.add("mint", EXCHANGE, 70, "0x" + "77" * 32)
    event.amount = 60  # the log records 60 while the chain minted 70
    history.log_event(event)
    event.amount = 70
    history.statement()
    code, _, err = run()
    assert code == ExitCode.NOT_ON_CHAIN
    assert "amount is 60 in the log but 70 on chain" in err


def test_supply_above_the_reserve_in_the_log_is_caught(history: History, run: Run) -> None:
    unbacked = history.chain.add("mint", EXCHANGE, 5000, "0x" + "66" * 32)
    history.log_event(unbacked)  # logged honestly, with no DT deposited for it
    code, _, err = run()
    assert code == ExitCode.ABOVE_RESERVE
    assert "after entry 10 (mint tx" in err
    assert "supply 6400 is above the reserve (the segregated wallet's balance) 1400" in err


def test_supply_above_the_reserve_on_chain_now_is_caught(history: History, run: Run) -> None:
    history.chain.add("mint", EXCHANGE, 5000, "0x" + "66" * 32)  # not in the log (yet)
    code, _, err = run()
    assert code == ExitCode.ABOVE_RESERVE
    assert "is 6400, above the reserve the log shows now (1400" in err


def test_a_statement_with_another_block_hash_is_caught(history: History, run: Run) -> None:
    statement = fmt.decode(history.log.entries[4])
    assert isinstance(statement, fmt.Statement)
    forged = fmt.Statement(**{**statement.__dict__, "block_hash": "0x" + "00" * 32})
    history.log.entries[4] = fmt.encode(forged)
    code, _, err = run()
    assert code == ExitCode.STATEMENT_MISMATCH
    assert f"entry 4 (statement at block {statement.block}): block_hash is 0x0000" in err


def test_an_event_logged_behind_the_statement_that_covers_it_is_caught(
    history: History, run: Run
) -> None:
    history.dt(70)
    late = history.chain.add("mint", EXCHANGE, 70, "0x" + "77" * 32)
    history.statement()
    history.log_event(late)
    code, _, err = run()
    assert code == ExitCode.OUT_OF_ORDER
    assert "comes after the statement at entry 11, which promised every event up to" in err


def test_a_node_without_old_state_checks_statements_by_events(history: History, run: Run) -> None:
    history.chain.mine()
    history.chain.archive = False
    code, out, _ = run()
    assert code == 0
    assert "(2 by events only)" in out


def test_a_node_without_batches_is_asked_one_call_at_a_time(history: History, run: Run) -> None:
    history.chain.batches = False
    code, out, _ = run()
    assert code == 0
    assert "2 statements match the chain" in out
    assert history.chain.calls["eth_getBlockByNumber"] == 2


def test_a_log_for_another_chain_or_contract_is_refused(history: History, run: Run) -> None:
    history.chain.chain_id = 1
    code, _, err = run()
    assert code == ExitCode.WRONG_LOG
    assert "serves chain 1, the log is for chain 31337" in err
    code, _, err = run("--contract", "0x" + "12" * 20)
    assert code == ExitCode.WRONG_LOG
    assert f"the log key is for contract {CONTRACT}" in err


def test_an_unreachable_log_exits_with_the_network_code(history: History) -> None:
    with serving(history) as (url, rpc):
        pass  # both servers are closed now
    code = verifier.main(["--url", url, "--rpc", rpc, "--log-key", history.log.signer.vkey()])
    assert code == ExitCode.UNREACHABLE


def test_a_log_key_that_names_no_collateral_log_is_a_usage_error(run: Run) -> None:
    code, _, err = run(key=note.Signer.generate("example.com/log").vkey())
    assert code == ExitCode.USAGE
    assert "is not <prefix>/collateral/<chain id>/<contract" in err


def test_an_incremental_run_downloads_only_the_new_bundles(
    history: History, run: Run, tmp_path: Path
) -> None:
    while len(history.log.entries) < 300:
        history.mint(1)
    history.statement()
    state = str(tmp_path / "state.json")
    size1 = len(history.log.entries)
    assert run("--state", state)[0] == 0
    assert sorted(history.log.bundle_requests()) == [
        "tile/entries/000",
        f"tile/entries/001.p/{size1 - 256}",
    ]
    history.log.requests.clear()

    while len(history.log.entries) < 600:
        history.redeem(1)
    history.statement()
    size2 = len(history.log.entries)
    code, out, _ = run("--state", state, "--json")
    assert code == 0
    assert sorted(history.log.bundle_requests()) == [
        "tile/entries/001",
        f"tile/entries/002.p/{size2 - 512}",
    ]
    assert json.loads(out)["entries_checked"] == size2 - size1

    history.log.requests.clear()
    code, out, _ = run("--state", state, "--json")
    assert (code, history.log.bundle_requests()) == (0, [])
    assert json.loads(out)["entries_checked"] == 0


def test_the_dt_gateway_command_runs_the_verifier(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(history) as (url, rpc):
        args = ["--url", url, "--rpc", rpc, "--log-key", history.log.signer.vkey(), "--json"]
        code = cli.main(["verify-collateral", *args])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["size"] == 10


def test_the_module_runs_alone_and_watches_until_interrupted(history: History) -> None:
    with serving(history) as (url, rpc):
        args = ["--url", url, "--rpc", rpc, "--log-key", history.log.signer.vkey()]
        process = _verifier(*args, "--json", "--watch", "0.2", stdout=subprocess.PIPE)
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        history.mint(5)
        history.statement()
        # The stand-in log and chain change one entry and one event at a time, so a run may
        # catch them half-way (an event not logged yet) and report it; the watch goes on.
        while not (second := json.loads(process.stdout.readline()))["ok"] or (
            second["size"] == first["size"]
        ):
            pass
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert (first["ok"], second["ok"]) == (True, True)
    assert 0 < second["entries_checked"] < second["size"]  # the watch keeps its state


def test_a_failed_run_leaves_the_state_file_as_it_was(
    history: History, run: Run, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    assert run("--state", str(state))[0] == 0
    before = state.read_bytes()
    history.mint(5)
    history.log.replaced[10] = _dt(history.log.entries[10], amount=6, balance=1406)
    assert run("--state", str(state))[0] == ExitCode.ROOT_MISMATCH
    assert state.read_bytes() == before


def test_a_damaged_state_file_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{}")
    code, _, err = run("--state", str(state))
    assert code == ExitCode.USAGE
    assert f"state file {state} is not a verifier state" in err


def test_a_run_interrupted_before_its_result_does_not_exit_as_verified(history: History) -> None:
    reached, release = threading.Event(), threading.Event()

    def stalls(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        reached.set()
        release.wait(30)
        return 503, b""

    stalled_log = Server(stalls)
    try:
        with serving(history) as (_, rpc):
            args = ["--url", stalled_log.url, "--rpc", rpc, "--log-key", history.log.signer.vkey()]
            process = _verifier(*args)
            while not reached.wait(0.1):  # the verifier is on its way to the checkpoint
                assert process.poll() is None, f"the verifier exited with {process.returncode}"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == ExitCode.INTERRUPTED
    finally:
        release.set()
        stalled_log.close()


def test_an_interrupted_run_does_not_wait_for_downloads_in_flight(history: History) -> None:
    # The entry bundles are fetched on the verifier's pool: those stall, the checkpoint does not.
    reached, release = threading.Event(), threading.Event()

    def bundles_stall(method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if "/tile/entries/" in path:
            reached.set()
            release.wait(30)
        return history.log.answer(method, path, body)

    stalled_log = Server(bundles_stall)
    try:
        with serving(history) as (_, rpc):
            args = ["--url", stalled_log.url, "--rpc", rpc, "--log-key", history.log.signer.vkey()]
            process = _verifier(*args)
            while not reached.wait(0.1):
                assert process.poll() is None, f"the verifier exited with {process.returncode}"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == ExitCode.INTERRUPTED  # not at the 30 s stall's end
    finally:
        release.set()
        stalled_log.close()
