"""The verifier against the chain's anchors of the log: every reserve attestation on chain names a
tree (size, root) of the log and the reserve its entries show there. A log that shows anything
else, even one signed by the log's own key and consistent in every other way, is refused."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest

from gateway.collateral import entries as fmt
from gateway.collateral import note, tlog, verifier
from gateway.collateral.verdict import ExitCode
from tests.support.collateral import ORIGIN, Chain, History, Log, serving


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def history() -> History:
    """Mints and a redemption, each followed by an attestation anchoring the log."""
    h = History(Log(note.Signer.generate(ORIGIN)), Chain())
    h.mint(1000)
    h.anchor()
    h.mint(500)
    h.anchor()
    h.statement()
    h.redeem(300)
    h.anchor()
    h.statement()
    return h


def verify(history: History, *extra: str, log: Log | None = None) -> tuple[int, dict[str, object]]:
    """Runs the verifier (in this process, over HTTP) against ``log`` (default: the history's)
    and the history's chain; returns the exit code and the JSON line it printed."""
    served = History(log, history.chain) if log is not None else history
    with serving(served) as (url, rpc):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            key = history.log.signer.vkey()
            code = verifier.main(["--url", url, "--rpc", rpc, "--log-key", key, "--json", *extra])
    return code, json.loads(out.getvalue().strip().splitlines()[-1])


def _retimed(data: bytes) -> bytes:
    """The same dt movement, a millisecond later: nothing a replay or the chain would notice."""
    entry = fmt.decode(data)
    assert isinstance(entry, fmt.DtMovement)
    return fmt.encode(dataclasses.replace(entry, time="2026-12-06T14:44:30.124Z"))


def test_an_honest_log_matches_every_anchor(history: History) -> None:
    code, report = verify(history)
    assert code == 0, report
    anchors = report["anchors"]
    assert isinstance(anchors, dict)
    newest = history.chain.attestations[-1]
    assert anchors["checked"] == 3
    assert (anchors["newest_block"], anchors["newest_size"]) == (newest.block, newest.size)
    assert (anchors["first"], anchors["last"], anchors["awaiting"]) == (0, history.chain.head, 0)


def test_the_text_report_counts_the_anchors(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(history) as (url, rpc):
        code = verifier.main(["--url", url, "--rpc", rpc, "--log-key", history.log.signer.vkey()])
    assert code == 0
    newest = history.chain.attestations[-1]
    assert (
        f"anchors     3 reserve attestations on chain anchor this log (root and reserve at "
        f"their size); newest: size {newest.size} at block {newest.block}"
    ) in capsys.readouterr().out


@pytest.mark.parametrize("anchored", ["first", "second"])
def test_of_two_checkpoints_the_log_key_signed_for_one_size_the_chain_decides(
    history: History, anchored: str
) -> None:
    """A split view: the log key signs two trees of the same size that differ in one entry's
    time. Each is consistent in itself (balances, supply, chain events), so only the chain's
    anchor tells them apart: the verifier accepts the anchored one and refuses the other."""
    history.mint(70)
    first = history.log
    second = Log(first.signer, entries=list(first.entries))
    second.entries[-2] = _retimed(second.entries[-2])  # the dt entry of the last mint
    assert len(first.entries) == len(second.entries)
    chosen, other = (first, second) if anchored == "first" else (second, first)
    history.log = chosen
    attested = history.anchor()
    history.log = first

    assert verify(history, log=chosen)[0] == 0
    code, failure = verify(history, log=other)
    assert code == ExitCode.ANCHOR_MISMATCH
    assert failure["failure"] == "ANCHOR_MISMATCH"
    size = len(first.entries)
    other_root = other.tree()[0].root()
    assert failure["message"] == (
        f"the attestation at block {attested.block} (tx {attested.tx_hash}, sequence "
        f"{attested.sequence}) anchors the log at size {size} with root {_b64(attested.root)}, "
        f"but the log served here has root {_b64(other_root)} at that size: this is not the "
        "history the chain holds"
    )


def test_an_anchored_reserve_the_log_does_not_show_is_refused(history: History) -> None:
    history.mint(50)
    inflated = history.anchor(reserve=history.balance + 1)
    code, failure = verify(history)
    assert code == ExitCode.ANCHOR_MISMATCH
    assert (
        f"attests a reserve of {history.balance + 1} at log size {inflated.size}"
        in failure["message"]
    )
    assert f"but the log's balance at that size is {history.balance}" in failure["message"]


def test_the_reserve_is_the_balance_at_the_anchored_size_not_the_newest(history: History) -> None:
    """An attestation names the tree it was made from: entries after it do not count."""
    before = history.balance
    history.anchor()
    history.mint(5)  # after the anchor: a larger balance
    code, report = verify(history)
    assert code == 0, report
    assert before != history.balance


def test_an_anchor_of_a_tree_newer_than_the_checkpoint_is_checked_by_the_next_run(
    history: History, tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    behind = Log(history.log.signer, entries=list(history.log.entries))
    history.dt(40)
    ahead = history.anchor()  # of a tree the checkpoint served first does not reach yet
    code, report = verify(history, "--state", state, log=behind)
    assert code == 0, report
    anchors = report["anchors"]
    assert isinstance(anchors, dict)
    assert (anchors["checked"], anchors["awaiting"]) == (3, 1)

    code, report = verify(history, "--state", state)  # the log caught up
    assert code == 0, report
    anchors = report["anchors"]
    assert isinstance(anchors, dict)
    assert (anchors["checked"], anchors["awaiting"]) == (1, 0)
    assert (anchors["newest_block"], anchors["newest_size"]) == (ahead.block, ahead.size)
    assert anchors["first"] == ahead.block


def test_an_incremental_run_checks_only_the_new_blocks(history: History, tmp_path: Path) -> None:
    state = str(tmp_path / "state.json")
    assert verify(history, "--state", state)[0] == 0
    history.mint(10)
    history.anchor()
    code, report = verify(history, "--state", state)
    assert code == 0, report
    anchors = report["anchors"]
    assert isinstance(anchors, dict)
    assert anchors["checked"] == 1
    code, report = verify(history, "--state", state)
    assert code == 0
    assert report["anchors"] == {
        "first": None,
        "last": None,
        "checked": 0,
        "newest_block": None,
        "newest_size": None,
        "awaiting": 0,
    }


def _older_tree(history: History, tmp_path: Path) -> tuple[str, int, bytes, int]:
    """A run verifies the log at some size; then the log grows. Returns the state file and the
    tree (size, root, balance) of a size below the verified one, as an attestation made before
    that run but mined after it would name."""
    while len(history.log.entries) < 300:
        history.mint(1)
    size = len(history.log.entries) - 2  # entry size - 1 is a mint: the balance is further back
    frontier = tlog.Frontier()
    for entry in history.log.entries[:size]:
        frontier.append(tlog.leaf_hash(entry))
    balance = 0
    for entry in history.log.entries[:size]:
        decoded = fmt.decode(entry)
        if isinstance(decoded, fmt.DtMovement):
            balance = decoded.balance
    state = str(tmp_path / "state.json")
    assert verify(history, "--state", state)[0] == 0
    history.statement()
    return state, size, frontier.root(), balance


def test_an_anchor_of_a_tree_older_than_the_last_verified_one_is_proven_from_the_tiles(
    history: History, tmp_path: Path
) -> None:
    state, size, root, balance = _older_tree(history, tmp_path)
    history.chain.attest(balance, size, root)
    code, report = verify(history, "--state", state)
    assert code == 0, report
    anchors = report["anchors"]
    assert isinstance(anchors, dict)
    assert (anchors["checked"], anchors["newest_size"]) == (1, size)


def test_an_older_anchor_with_another_root_is_refused(history: History, tmp_path: Path) -> None:
    state, size, root, balance = _older_tree(history, tmp_path)
    forged = tlog.node_hash(root, root)
    history.chain.attest(balance, size, forged)
    code, failure = verify(history, "--state", state)
    assert code == ExitCode.ANCHOR_MISMATCH
    assert (
        f"anchors the log at size {size} with root {_b64(forged)}, but the log served here has "
        f"root {_b64(root)} at that size"
    ) in str(failure["message"])


def test_an_older_anchor_with_another_reserve_is_refused(history: History, tmp_path: Path) -> None:
    state, size, root, balance = _older_tree(history, tmp_path)
    history.chain.attest(balance + 7, size, root)
    code, failure = verify(history, "--state", state)
    assert code == ExitCode.ANCHOR_MISMATCH
    assert f"but the log's balance at that size is {balance}" in str(failure["message"])


def test_an_older_anchor_whose_tiles_are_missing_is_not_passed(
    history: History, tmp_path: Path
) -> None:
    state, size, root, balance = _older_tree(history, tmp_path)
    history.chain.attest(balance, size, root)
    missing = tlog.tile_path(0, 1, len(history.log.entries) - 256)
    history.log.hidden = {missing}
    code, failure = verify(history, "--state", state)
    assert code == ExitCode.UNREACHABLE
    assert f"{missing}: HTTP 404" in str(failure["message"])


def test_an_anchor_of_the_empty_tree_with_no_reserve_matches(history: History) -> None:
    history.chain.attest(0, 0, tlog.EMPTY_ROOT)
    code, report = verify(history)
    assert code == 0, report


def test_a_failed_anchor_check_leaves_the_state_file_as_it_was(
    history: History, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    assert verify(history, "--state", str(state))[0] == 0
    before = state.read_bytes()
    history.mint(5)
    history.anchor(reserve=1)
    assert verify(history, "--state", str(state))[0] == ExitCode.ANCHOR_MISMATCH
    assert state.read_bytes() == before
