"""The verifier's ``--witness`` and ``--quorum``: it requires that many valid cosignatures on the
very checkpoint it is shown, and names the witnesses missing when there are too few."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest

from gateway.collateral import note, verifier
from gateway.collateral.verdict import ExitCode
from tests.support.collateral import ORIGIN, Chain, History, Log, serving

Run = Callable[..., tuple[int, dict[str, object]]]

W1 = note.Cosigner.generate("witness.one/w")
W2 = note.Cosigner.generate("witness.two/w")


@pytest.fixture
def history() -> History:
    h = History(Log(note.Signer.generate(ORIGIN)), Chain())
    h.mint(1000)
    h.statement()
    return h


def _cosigned(history: History, *cosigners: note.Cosigner, timestamp: int | None = None) -> str:
    """The log's checkpoint with these witnesses' cosignatures appended, served from now on."""
    signed = history.log.checkpoint().decode()
    body = signed[: signed.index("\n\n") + 1]
    cosigned = signed + "".join(note.cosign(body, c, timestamp) for c in cosigners)
    history.log.checkpoint_override = cosigned.encode()
    return cosigned


@pytest.fixture
def run(history: History, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*extra: str) -> tuple[int, dict[str, object]]:
        with serving(history) as (url, rpc):
            key = history.log.signer.vkey()
            code = verifier.main(["--url", url, "--rpc", rpc, "--log-key", key, "--json", *extra])
        out = capsys.readouterr().out.strip().splitlines()
        return code, json.loads(out[-1])

    return run


def _witnesses(*cosigners: note.Cosigner) -> list[str]:
    return [arg for c in cosigners for arg in ("--witness", c.vkey())]


def test_a_checkpoint_cosigned_by_every_witness_given_verifies(history: History, run: Run) -> None:
    _cosigned(history, W1, W2)
    code, report = run(*_witnesses(W1, W2))
    assert code == ExitCode.OK, report
    assert report["cosigned_by"] == ["witness.one/w", "witness.two/w"]


def test_a_missing_cosignature_fails_and_names_the_witness(history: History, run: Run) -> None:
    _cosigned(history, W1)
    code, report = run(*_witnesses(W1, W2))
    assert code == ExitCode.MISSING_COSIGNATURES
    message = str(report["message"])
    assert f"witness.two/w+{W2.key_id.hex()} (no cosignature)" in message
    assert "cosigned by 1 of the 2 witnesses given, fewer than the quorum of 2" in message
    assert "witness.one/w+" not in message.split("missing:")[1]


def test_a_quorum_below_the_number_of_witnesses_tolerates_the_missing_ones(
    history: History, run: Run
) -> None:
    _cosigned(history, W2)
    code, report = run(*_witnesses(W1, W2), "--quorum", "1")
    assert code == ExitCode.OK, report
    assert report["cosigned_by"] == ["witness.two/w"]


def test_a_cosignature_of_another_text_of_the_same_tree_does_not_count(
    history: History, run: Run
) -> None:
    """The log signs the same tree again with a new timestamp line; the old cosignature does
    not cover the new text."""
    now = int(time.time())
    history.log.timestamp = lambda: now - 20
    old = _cosigned(history, W1)
    history.log.timestamp = lambda: now - 10
    history.log.checkpoint_override = None
    new = history.log.checkpoint().decode()
    assert old[: old.index("\n\n")] != new[: new.index("\n\n")]
    history.log.checkpoint_override = (new + old.splitlines(keepends=True)[-1]).encode()
    code, report = run(*_witnesses(W1))
    assert code == ExitCode.MISSING_COSIGNATURES
    assert "its cosignature does not verify on this checkpoint" in str(report["message"])


def test_a_forged_cosignature_counts_as_missing_not_as_a_bad_log_signature(
    history: History, run: Run
) -> None:
    cosigned = _cosigned(history, W1)
    text, sig = cosigned.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[20] ^= 1
    history.log.checkpoint_override = (
        text + " " + base64.b64encode(bytes(raw)).decode() + "\n"
    ).encode()
    code, report = run(*_witnesses(W1))
    assert code == ExitCode.MISSING_COSIGNATURES, report
    # Without --witness the log's own signature still verifies: it is the witness's line.
    code, _ = run()
    assert code == ExitCode.OK


def test_a_cosignature_dated_in_the_future_counts_as_missing(history: History, run: Run) -> None:
    _cosigned(history, W1, timestamp=int(time.time()) + 3600)
    code, report = run(*_witnesses(W1))
    assert code == ExitCode.MISSING_COSIGNATURES
    assert "in the future" in str(report["message"])


@pytest.mark.parametrize(
    "args",
    [
        ["--witness", W1.vkey(), "--quorum", "2"],
        ["--quorum", "1"],
        ["--witness", W1.vkey(), "--quorum", "-1"],
        ["--witness", "not a key"],
        ["--witness", note.Signer.generate("witness.one/w").vkey()],  # a note key, not 0x04
        ["--witness", W1.vkey(), "--witness", W1.vkey()],
    ],
)
def test_bad_witness_arguments_are_usage_errors(
    history: History, run: Run, args: list[str]
) -> None:
    _cosigned(history, W1)
    code, report = run(*args)
    assert code == ExitCode.USAGE, report
