"""The gateway's side of witnessing, on SQLite and PostgreSQL with a real witness over HTTP:
each new checkpoint is submitted (with the consistency proof from the witness's size), the
cosignatures are stored, and the checkpoint served carries exactly those that verify on its
text; a witness that is down holds up nothing and is asked again later."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.collateral import note, service, witnessing
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork, StoredCheckpoint
from gateway.config import load_settings
from gateway.db import utcnow
from gateway.errors import InvalidInput
from gateway.messaging.serving import free_port, serve_in_thread
from tests.support.witnesses import (
    deposit,
    integrate,
    make_log,
    open_wallets,
    running_witness,
    uow_factory,
)

ORIGIN = "test.example/collateral/31337/0x00000000000000000000000000000000000000dd"


class Clock:
    """The submitting job's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signer() -> note.Signer:
    return note.Signer.generate(ORIGIN)


@pytest.fixture
def transport() -> Iterator[witnessing.HttpTransport]:
    t = witnessing.HttpTransport(timeout=5)
    yield t
    t.close()


def _served(engine: Engine, clog: CollateralLog) -> str:
    clog.checkpoint = None  # read it again, as a replica whose cache expired
    return service.checkpoint(uow_factory(engine), clog)[0]


def _opened(served: str, signer: note.Signer, *witness_vkeys: str) -> note.Note:
    keys = [signer.verifier(), *(note.Verifier.from_vkey(v) for v in witness_vkeys)]
    return note.open_note(served, keys)


def test_each_new_checkpoint_is_cosigned_and_served_with_its_cosignature(
    engine: Engine, signer: note.Signer, tmp_path: Path, transport: witnessing.HttpTransport
) -> None:
    open_wallets(engine)
    with running_witness(tmp_path / "w", [signer.verifier()]) as w:
        clog = make_log(signer, [w.setting()])
        deposit(engine, 10)
        assert integrate(engine, clog) == 10
        done = witnessing.submit(uow_factory(engine), clog, transport)
        assert done.cosigned == (clog.witnesses[0].id,) and done.served_cosignatures == 1
        opened = _opened(_served(engine, clog), signer, w.vkey)
        assert opened.verified == [ORIGIN, "witness.test/w1"]
        assert note.Checkpoint.parse(opened.text).size == 10

        # Growth: the witness is sent the proof from the size it cosigned.
        deposit(engine, 300)
        assert integrate(engine, clog) == 310
        assert witnessing.submit(uow_factory(engine), clog, transport).cosigned
        state = w.witness.state.get(ORIGIN)
        assert state is not None and state.size == 310
        served = _served(engine, clog)
        assert note.Checkpoint.parse(_opened(served, signer, w.vkey).text).size == 310
        [(cosigner, _)] = witnessing.cosigners(_stored_served(engine, clog), clog)
        assert cosigner == clog.witnesses[0].id

        # Nothing new: nothing is submitted.
        assert witnessing.submit(uow_factory(engine), clog, transport).asked == ()

        # Over HTTP: the checkpoint route and the proof bundles carry the cosignature.
        settings = load_settings(environ={}, collateral={"rate_per_second": 1e6})
        with (
            serve_in_thread(create_app(settings, engine, collateral=clog)) as url,
            httpx.Client(base_url=url, timeout=10) as client,
        ):
            assert client.get("/collateral/log/checkpoint").text == served
            assert client.get("/v1/collateral/proof/3").text.endswith(served)
            assert client.get("/v1/collateral/entries/3").json()["checkpoint"] == served


def _stored_served(engine: Engine, clog: CollateralLog) -> StoredCheckpoint:
    uow = CollateralUnitOfWork(engine, readonly=True)
    with uow:
        cp = witnessing.served(uow, clog)
    assert cp is not None
    return cp


def test_a_checkpoint_signed_again_is_served_only_with_cosignatures_on_its_own_text(
    engine: Engine, signer: note.Signer, tmp_path: Path, transport: witnessing.HttpTransport
) -> None:
    """The log signs the same tree again every ``resign_seconds`` with a new timestamp line;
    a cosignature/v1 covers that line, so each text needs its own cosignature."""
    open_wallets(engine)
    with running_witness(tmp_path / "w", [signer.verifier()]) as w:
        clog = make_log(signer, [w.setting()])
        deposit(engine, 4)
        t0 = utcnow()
        integrate(engine, clog, t0)
        witnessing.submit(uow_factory(engine), clog, transport)
        first = _served(engine, clog)

        later = t0 + timedelta(seconds=clog.settings.resign_seconds + 1)
        assert service.integrate(uow_factory(engine), clog, later).signed
        # Signed again, not yet put to the witness: the cosigned text is still what is served.
        assert _served(engine, clog) == first
        assert _opened(first, signer, w.vkey).verified == [ORIGIN, "witness.test/w1"]

        done = witnessing.submit(uow_factory(engine), clog, transport)
        assert done.cosigned and done.size == 4
        second = _served(engine, clog)
        assert second != first
        assert _opened(second, signer, w.vkey).verified == [ORIGIN, "witness.test/w1"]
        assert f"timestamp {int(later.timestamp())}" in second
        # Exactly one cosignature, on this text: the old one is not carried over.
        assert second.count("\u2014 witness.test/w1 ") == 1


def test_a_witness_that_knows_the_log_already_is_sent_the_proof_from_its_size(
    engine: Engine, signer: note.Signer, tmp_path: Path, transport: witnessing.HttpTransport
) -> None:
    open_wallets(engine)
    with running_witness(tmp_path / "w", [signer.verifier()]) as w:
        clog = make_log(signer, [w.setting()])
        deposit(engine, 9)
        integrate(engine, clog)
        # Someone else fed the witness this log's checkpoint of 9 (another replica's memory).
        note_9 = _stored_served(engine, clog).note
        assert httpx.post(w.url + "/add-checkpoint", content=b"old 0\n\n" + note_9.encode())
        deposit(engine, 20)
        integrate(engine, clog)
        done = witnessing.submit(uow_factory(engine), clog, transport)  # old 0 -> 409 "9"
        assert done.cosigned and clog.peer_status[clog.witnesses[0].id].size == 29
        state = w.witness.state.get(ORIGIN)
        assert state is not None and state.size == 29


def test_a_witness_that_is_down_holds_up_nothing_and_is_asked_again_later(
    engine: Engine,
    signer: note.Signer,
    tmp_path: Path,
    transport: witnessing.HttpTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    open_wallets(engine)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_witness(tmp_path / "w", [signer.verifier()], port=port) as w:
        vkey = w.vkey
    clog = make_log(
        signer,
        [{"url": url, "vkey": vkey}],
        witness_retry_seconds=2.0,
        witness_retry_max_seconds=5.0,
    )
    peer = clog.witnesses[0].id
    clock = Clock()
    deposit(engine, 3)
    integrate(engine, clog)
    with caplog.at_level(logging.WARNING, logger="gateway.collateral.witnessing"):
        done = witnessing.submit(uow_factory(engine), clog, transport, clock)
    assert done.asked == (peer,) and done.cosigned == ()
    assert "did not cosign" in caplog.text
    # The log goes on: the newest checkpoint is served, without a cosignature.
    served = _served(engine, clog)
    assert note.Checkpoint.parse(_opened(served, signer).text).size == 3
    assert "witness.test/w1" not in served
    deposit(engine, 2)
    assert integrate(engine, clog) == 5
    # A new checkpoint within the retry delay: served at once, the witness not asked.
    assert witnessing.submit(uow_factory(engine), clog, transport, clock).asked == ()
    assert note.Checkpoint.parse(_opened(_served(engine, clog), signer).text).size == 5
    clock.now += 2.5
    assert witnessing.submit(uow_factory(engine), clog, transport, clock).asked == (peer,)
    assert clog.peer_status[peer].failures == 2  # still down: 4 s this time
    clock.now += 3.0
    assert witnessing.submit(uow_factory(engine), clog, transport, clock).asked == ()

    with running_witness(tmp_path / "w", [signer.verifier()], port=port) as w:
        clock.now += 1.5
        done = witnessing.submit(uow_factory(engine), clog, transport, clock)
        assert done.cosigned == (peer,)
        assert clog.peer_status[peer].failures == 0
        opened = _opened(_served(engine, clog), signer, w.vkey)
        assert opened.verified == [ORIGIN, "witness.test/w1"]


def test_the_newest_checkpoint_is_served_bare_when_the_witnesses_were_not_asked_for_long(
    engine: Engine, signer: note.Signer, tmp_path: Path, transport: witnessing.HttpTransport
) -> None:
    open_wallets(engine)
    with running_witness(tmp_path / "w", [signer.verifier()]) as w:
        clog = make_log(signer, [w.setting()], resign_seconds=2.0, witness_grace_seconds=5.0)
        deposit(engine, 2)
        t0 = utcnow()
        integrate(engine, clog, t0)
        witnessing.submit(uow_factory(engine), clog, transport)
        cosigned = _served(engine, clog)
        # The submitting job stops; the log goes on signing.
        deposit(engine, 1)
        integrate(engine, clog, t0 + timedelta(seconds=3))
        assert _served(engine, clog) == cosigned  # within the grace
        deposit(engine, 1)
        integrate(engine, clog, t0 + timedelta(seconds=6))
        bare = _served(engine, clog)
        assert note.Checkpoint.parse(_opened(bare, signer).text).size == 4
        assert "witness.test/w1" not in bare


def test_a_cosignature_that_does_not_verify_is_not_kept(
    engine: Engine, signer: note.Signer, tmp_path: Path, transport: witnessing.HttpTransport
) -> None:
    """A witness answering with another key's line (or garbage) counts as a failure."""
    open_wallets(engine)
    with running_witness(tmp_path / "w", [signer.verifier()]) as w:
        impostor = note.Cosigner.generate("witness.test/w1")  # the name, another key
        clog = make_log(signer, [{"url": w.url, "vkey": impostor.vkey()}])
        deposit(engine, 2)
        integrate(engine, clog)
        done = witnessing.submit(uow_factory(engine), clog, transport)
        assert done.asked and not done.cosigned
        status = clog.peer_status[clog.witnesses[0].id]
        assert status.last_error is not None and "no cosignature" in status.last_error
        assert "witness.test/w1" not in _served(engine, clog)


def test_the_grace_before_serving_bare_must_outlast_the_signing_period() -> None:
    """A quiet log signs again every resign_seconds: a shorter grace would serve each new text
    bare for the moment before its witnesses answer."""
    with pytest.raises(ValidationError, match="witness_grace_seconds must exceed resign_seconds"):
        load_settings(environ={}, collateral={"resign_seconds": 10, "witness_grace_seconds": 10})


def test_a_witness_key_that_is_not_a_cosignature_key_is_refused_at_start(
    signer: note.Signer,
) -> None:
    with pytest.raises(InvalidInput, match="not a cosignature/v1"):
        make_log(signer, [{"url": "http://127.0.0.1:1", "vkey": signer.vkey()}])
    with pytest.raises(InvalidInput, match=r"collateral\.witnesses"):
        make_log(signer, [{"url": "http://127.0.0.1:1", "vkey": "nonsense"}])
