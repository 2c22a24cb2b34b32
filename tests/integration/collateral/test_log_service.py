"""The collateral log on real SQLite and PostgreSQL: every posted movement of a segregated wallet
is pooled in the ledger's transaction, integration sequences the pool into an RFC 9162 tree, and
everything served (checkpoint, tiles, entries, proofs) verifies with the public code alone."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from gateway.collateral import entries as fmt
from gateway.collateral import service, tlog
from gateway.collateral.note import Checkpoint, Verifier, open_note
from gateway.collateral.runtime import CollateralLog
from gateway.ledger import service as ledger
from gateway.ledger.model import CreateLock
from gateway.ledger.store import LedgerUnitOfWork
from tests.integration.collateral.support import (
    EXCHANGE,
    ORIGIN,
    SEG,
    make_log,
    move,
    setup_wallets,
    uow_factory,
)


def _served_entries(engine: Engine, clog: CollateralLog) -> list[bytes]:
    uow = uow_factory(engine)(readonly=True)
    with uow:
        size = uow.collateral.size(SEG)
        return uow.collateral.entry_range(SEG, 0, size)


def test_only_posted_movements_of_the_segregated_wallet_are_logged_in_order(
    engine: Engine,
) -> None:
    setup_wallets(engine)
    clog = make_log()
    move(engine, "mint-1", EXCHANGE, SEG, 700)
    move(engine, "elsewhere", EXCHANGE, "other", 5)  # not the segregated wallet
    ledger.apply_one(  # a lock reserves, it does not move posted DT
        LedgerUnitOfWork(engine),
        CreateLock(id="lock-1", debit_wallet_id=SEG, credit_wallet_id=EXCHANGE, amount=10),
    )
    move(engine, "refund-1", SEG, EXCHANGE, 200)
    done = service.integrate(uow_factory(engine), clog)
    assert (done.size, done.added) == (2, 2)
    first, second = (fmt.decode(b) for b in _served_entries(engine, clog))
    assert isinstance(first, fmt.DtMovement) and isinstance(second, fmt.DtMovement)
    assert (first.transfer_id, first.op, first.amount, first.balance) == (
        "mint-1",
        "transfer",
        700,
        700,
    )
    assert (second.transfer_id, second.amount, second.balance) == ("refund-1", -200, 500)


def test_the_checkpoint_signs_the_root_of_the_served_entries(engine: Engine) -> None:
    setup_wallets(engine)
    clog = make_log()
    for i in range(5):
        move(engine, f"mint-{i}", EXCHANGE, SEG, 10 + i)
    service.integrate(uow_factory(engine), clog)
    clog.checkpoint = None
    note, size = service.checkpoint(uow_factory(engine), clog)
    opened = open_note(note, [Verifier.from_vkey(clog.vkey)])
    cp = Checkpoint.parse(opened.text)
    assert (cp.origin, cp.size) == (ORIGIN, 5) and size == 5
    bodies = _served_entries(engine, clog)
    assert cp.root == tlog.root_of([tlog.leaf_hash(b) for b in bodies])
    assert any(line.startswith("timestamp ") for line in cp.extensions)


def test_batches_of_any_size_give_the_same_tree(engine: Engine) -> None:
    setup_wallets(engine)
    clog = make_log(batch_limit=3)
    for i in range(10):
        move(engine, f"mint-{i}", EXCHANGE, SEG, 1 + i)
    sizes = []
    while (done := service.integrate(uow_factory(engine), clog)).added:
        sizes.append(done.size)
    assert sizes == [3, 6, 9, 10]
    clog.frontier = None  # a restarted replica reloads the tree's edge from the tables
    move(engine, "mint-10", EXCHANGE, SEG, 11)
    assert service.integrate(uow_factory(engine), clog).size == 11
    bodies = _served_entries(engine, clog)
    note, _ = service.checkpoint(uow_factory(engine), _fresh_cache(clog))
    cp = Checkpoint.parse(open_note(note, [Verifier.from_vkey(clog.vkey)]).text)
    assert cp.root == tlog.root_of([tlog.leaf_hash(b) for b in bodies])


def _fresh_cache(clog: CollateralLog) -> CollateralLog:
    clog.checkpoint = None
    return clog


def test_served_proofs_and_tiles_verify(engine: Engine) -> None:
    setup_wallets(engine)
    clog = make_log(batch_limit=7)
    uow = uow_factory(engine)
    roots = {}
    for i in range(300):
        move(engine, f"mint-{i}", EXCHANGE, SEG, 1)
        if i % 37 == 0:
            service.integrate(uow, clog)
    while service.integrate(uow, clog).added:
        pass
    bodies = _served_entries(engine, clog)
    assert len(bodies) == 300
    leaves = [tlog.leaf_hash(b) for b in bodies]
    root = tlog.root_of(leaves)
    for index in (0, 1, 255, 256, 299):
        got = service.entry_with_proof(uow, clog, index)
        proof = [base64.b64decode(h) for h in got["inclusion_proof"]]  # type: ignore[union-attr]
        tlog.verify_inclusion(index, 300, leaves[index], proof, root)
        assert base64.b64decode(got["entry_base64"]) == bodies[index]  # type: ignore[arg-type]
    for first in (1, 7, 256, 299):
        roots[first] = tlog.root_of(leaves[:first])
        c = service.consistency(uow, clog, first)
        tlog.verify_consistency(
            first,
            300,
            [base64.b64decode(h) for h in c["proof"]],
            roots[first],
            root,  # type: ignore[union-attr]
        )
    full, is_full = service.tile(uow, clog, "tile/0/000")
    assert is_full and full == b"".join(leaves[:256])
    part, is_full = service.tile(uow, clog, "tile/0/001.p/44")
    assert not is_full and part == b"".join(leaves[256:300])
    bundle, _ = service.tile(uow, clog, "tile/entries/001.p/44")
    assert tlog.decode_bundle(bundle) == bodies[256:300]
    level1, _ = service.tile(uow, clog, "tile/1/000.p/1")
    assert level1 == tlog.root_of(leaves[:256])
    with pytest.raises(service.TileNotFound):
        service.tile(uow, clog, "tile/0/001")  # not full yet
    with pytest.raises(service.TileNotFound):
        service.tile(uow, clog, "tile/entries/001.p/45")
    with pytest.raises(service.EntryNotFound):
        service.entry_with_proof(uow, clog, 300)
    bundle_text = service.proof_bundle(uow, clog, 42)
    head, _, note = bundle_text.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1" and lines[2] == "index 42"
    assert base64.b64decode(lines[1].removeprefix("extra ")) == bodies[42]
    cp = Checkpoint.parse(open_note(note, [Verifier.from_vkey(clog.vkey)]).text)
    tlog.verify_inclusion(
        42, cp.size, leaves[42], [base64.b64decode(x) for x in lines[3:]], cp.root
    )
    found = service.find_entries(uow, clog, transfer_id="mint-17")
    assert [e["index"] for e in found] == [17]
    assert json.loads(bodies[17])["transfer_id"] == "mint-17"


def test_two_integrators_at_once_never_double_or_lose_an_entry(engine: Engine) -> None:
    setup_wallets(engine)
    uow = uow_factory(engine)
    one, other = make_log(batch_limit=5), make_log(batch_limit=5)
    other.signer = one.signer
    stop = threading.Event()
    failures: list[BaseException] = []

    def run(clog: CollateralLog) -> None:
        try:
            while not stop.is_set():
                service.integrate(uow, clog)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in (one, other)]
    for t in threads:
        t.start()
    for i in range(60):
        move(engine, f"mint-{i}", EXCHANGE, SEG, 1)
    while True:
        r = uow(readonly=True)
        with r:
            if r.collateral.pending_count(SEG) == 0 and r.collateral.size(SEG) == 60:
                break
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    ids = [fmt.decode(b).transfer_id for b in _served_entries(engine, one)]  # type: ignore[union-attr]
    assert ids == [f"mint-{i}" for i in range(60)]


def test_a_stale_checkpoint_is_signed_again_with_no_new_entries(engine: Engine) -> None:
    setup_wallets(engine)
    clog = make_log(resign_seconds=10)
    uow = uow_factory(engine)
    t0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert service.integrate(uow, clog, t0).signed  # the empty tree gets its checkpoint
    assert not service.integrate(uow, clog, t0 + timedelta(seconds=5)).signed
    assert service.integrate(uow, clog, t0 + timedelta(seconds=11)).signed
    note, size = service.checkpoint(uow, _fresh_cache(clog))
    cp = Checkpoint.parse(open_note(note, [Verifier.from_vkey(clog.vkey)]).text)
    assert size == 0 and cp.root == tlog.EMPTY_ROOT
    assert f"timestamp {int((t0 + timedelta(seconds=11)).timestamp())}" in cp.extensions
