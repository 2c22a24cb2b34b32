"""A split view: the log's key signs two different trees of the same size (two gateways on two
databases, one log key), to show one history to some people and another to others.

The witness cosigns the first and refuses the second (422, its state unchanged); a verifier
that saw the first (its state file) refuses the second as a rewritten history; a verifier that
requires the witness's cosignature refuses the second as not cosigned, without any state."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.collateral import note, verifier, witnessing
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.verdict import ExitCode
from gateway.config import load_settings
from gateway.messaging.serving import serve_in_thread
from tests.support.collateral import ORIGIN, Chain, Server
from tests.support.databases import migrated_engine
from tests.support.witnesses import (
    RunningWitness,
    deposit,
    integrate,
    make_log,
    open_wallets,
    running_witness,
    uow_factory,
)


@contextmanager
def _served(engine: Engine, clog: CollateralLog) -> Iterator[str]:
    settings = load_settings(environ={}, collateral={"rate_per_second": 1e6})
    with serve_in_thread(create_app(settings, engine, collateral=clog)) as url:
        yield url


def _gateway(
    tmp: Path, name: str, signer: note.Signer, w: RunningWitness, amount: int
) -> tuple[Engine, CollateralLog]:
    engine = migrated_engine(f"sqlite:///{tmp / name}.db")
    open_wallets(engine)
    deposit(engine, 12, amount)
    clog = make_log(signer, [w.setting()])
    assert integrate(engine, clog) == 12
    return engine, clog


def test_a_split_view_is_refused_by_the_witness_and_by_verifiers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    log_key = note.Signer.generate(ORIGIN)
    rpc = Server(Chain().answer)  # a chain where nothing was minted: the log is all DT
    with ExitStack() as stack:
        stack.callback(rpc.close)
        w = stack.enter_context(running_witness(tmp_path / "w", [log_key.verifier()]))
        transport = witnessing.HttpTransport(timeout=5)
        stack.callback(transport.close)
        # Two gateways, one log key, two histories of 12 entries (deposits of 5, and of 7).
        honest, honest_log = _gateway(tmp_path, "a", log_key, w, 5)
        split, split_log = _gateway(tmp_path, "b", log_key, w, 7)
        stack.callback(honest.dispose)
        stack.callback(split.dispose)

        assert witnessing.submit(uow_factory(honest), honest_log, transport).cosigned
        cosigned = w.witness.state.get(ORIGIN)
        assert cosigned is not None and cosigned.size == 12

        # The second history: refused by the witness (422), which keeps what it had.
        with caplog.at_level(logging.ERROR, logger="gateway.collateral.witnessing"):
            done = witnessing.submit(uow_factory(split), split_log, transport)
        assert done.asked and not done.cosigned
        assert "refused the log's checkpoint" in caplog.text and "HTTP 422" in caplog.text
        assert w.witness.state.get(ORIGIN) == cosigned
        assert len(w.witness.state.evidence(ORIGIN)) == 1

        honest_url = stack.enter_context(_served(honest, honest_log))
        split_url = stack.enter_context(_served(split, split_log))
        state = tmp_path / "verifier.json"

        def verify(url: str, *extra: str) -> tuple[int, dict[str, object]]:
            code = verifier.main(
                ["--url", url, "--rpc", rpc.url, "--log-key", log_key.vkey(), "--json", *extra]
            )
            out = capsys.readouterr().out.strip().splitlines()
            return code, json.loads(out[-1])

        witness = ("--witness", w.vkey)
        # Someone verifies the honest log, keeping state, with the witness's cosignature.
        code, report = verify(honest_url, "--state", str(state), *witness)
        assert code == ExitCode.OK, report
        # The same person is later shown the other history: a rewrite of what they saw.
        code, report = verify(split_url, "--state", str(state))
        assert code == ExitCode.REWRITTEN, report
        assert "last verified checkpoint of the same size" in str(report["message"])
        # Someone who never looked before, but requires the witness: not cosigned.
        code, report = verify(split_url, *witness)
        assert code == ExitCode.MISSING_COSIGNATURES, report
        assert "witness.test/w1" in str(report["message"])
        # Without the witness, a newcomer could not tell: that is what witnesses are for.
        code, _ = verify(split_url)
        assert code == ExitCode.OK
