"""The tree a reserve attestation anchors, on real SQLite and PostgreSQL: it is a signed
checkpoint that already holds every DT movement committed before it was asked for (integrated
on demand, beside other integrators), and its reserve is the balance the log shows there."""

from __future__ import annotations

import threading
from functools import partial

from sqlalchemy.engine import Engine

from gateway.collateral import entries as fmt
from gateway.collateral import service, tlog
from gateway.collateral.anchoring import AnchorPoint, anchor_point
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.collateral.tlog import EMPTY_ROOT
from gateway.config import CollateralSettings
from gateway.db import utcnow
from gateway.sqlite.walsync import group_sync
from tests.integration.collateral.support import (
    EXCHANGE,
    ORIGIN,
    SEG,
    make_log,
    move,
    setup_wallets,
    uow_factory,
)


def _signed_root(engine: Engine, size: int) -> bytes | None:
    with CollateralUnitOfWork(engine, readonly=True) as uow:
        latest = uow.collateral.latest_checkpoint(SEG)
        return latest.root if latest is not None and latest.size == size else None


def _balance_in_log(engine: Engine, size: int) -> int:
    with CollateralUnitOfWork(engine, readonly=True) as uow:
        bodies = uow.collateral.entry_range(SEG, 0, size)
    balance = 0
    for body in bodies:
        entry = fmt.decode(body)
        if isinstance(entry, fmt.DtMovement):
            balance = entry.balance
    return balance


def test_the_anchor_holds_the_deposit_just_committed_and_shows_its_balance(
    engine: Engine,
) -> None:
    setup_wallets(engine)
    clog = make_log()  # no integration job runs here: the anchor integrates on demand
    move(engine, "mint-1", EXCHANGE, SEG, 700)
    first = anchor_point(engine, clog)
    assert first == AnchorPoint(1, tlog.root_of([_leaf(engine, 0)]), 700)
    assert _signed_root(engine, 1) == first.root

    move(engine, "mint-2", EXCHANGE, SEG, 300)
    move(engine, "refund-1", SEG, EXCHANGE, 200)
    second = anchor_point(engine, clog)
    assert (second.size, second.reserve) == (3, 800)
    assert _signed_root(engine, 3) == second.root
    assert second.reserve == _balance_in_log(engine, second.size)


def test_the_reserve_is_the_balance_at_the_anchored_size_among_chain_entries(
    engine: Engine,
) -> None:
    """Entries after the last DT movement (a mint, a statement) leave the reserve as it was."""
    setup_wallets(engine)
    clog = make_log()
    move(engine, "mint-1", EXCHANGE, SEG, 700)
    statement = service.statement_entry(9, "0x" + "ab" * 32, 0, 700, utcnow())
    with CollateralUnitOfWork(engine) as uow:  # pooled after the deposit, as the watcher does
        service.pool_chain_entries(uow, clog, [statement], utcnow())
        uow.commit()
    point = anchor_point(engine, clog)
    assert (point.size, point.reserve) == (2, 700)


def test_integration_reports_the_root_it_signed_and_the_balance_its_entries_show(
    engine: Engine,
) -> None:
    setup_wallets(engine)
    clog, uow = make_log(), uow_factory(engine)
    move(engine, "mint-1", EXCHANGE, SEG, 700)
    grown = service.integrate(uow, clog, balance=True)  # a batch with a DT movement
    assert (grown.size, grown.balance, grown.root) == (1, 700, _signed_root(engine, 1))
    statement = service.statement_entry(9, "0x" + "ab" * 32, 0, 700, utcnow())
    with CollateralUnitOfWork(engine) as write:
        service.pool_chain_entries(write, clog, [statement], utcnow())
        write.commit()
    chain_only = service.integrate(uow, clog, balance=True)  # none: the balance before it
    assert (chain_only.size, chain_only.balance) == (2, 700)
    nothing_new = service.integrate(uow, clog, balance=True)  # the pool is empty
    assert (nothing_new.size, nothing_new.signed, nothing_new.balance) == (2, False, 700)
    assert nothing_new.root == chain_only.root == _signed_root(engine, 2)
    assert service.integrate(uow, clog).balance is None  # not asked for, not read


def test_an_anchor_waits_for_no_fsync_of_its_own(engine: Engine) -> None:
    """The on-demand integration is not made durable by itself: the pool rows it sequenced
    already are, and the tree they make comes back the same after a crash."""
    sync = group_sync(engine)
    if sync is None:
        return  # PostgreSQL commits durably; there is no group commit to spare
    setup_wallets(engine)
    move(engine, "mint-1", EXCHANGE, SEG, 700)
    before = sync.fsyncs
    assert anchor_point(engine, make_log()).size == 1
    assert sync.fsyncs == before


def test_an_empty_log_anchors_the_empty_tree_with_no_reserve(engine: Engine) -> None:
    setup_wallets(engine)
    assert anchor_point(engine, make_log()) == AnchorPoint(0, EMPTY_ROOT, 0)


def test_beside_other_integrators_every_deposit_committed_before_is_anchored(
    engine: Engine,
) -> None:
    """Two replicas' integrators run all the time; each anchor asked for after a deposit
    committed holds it, whichever integrator sequenced it."""
    setup_wallets(engine)
    settings = CollateralSettings()
    signer = make_log().signer
    replicas = [CollateralLog(SEG, ORIGIN, signer, settings) for _ in range(2)]
    stop = threading.Event()

    def integrator(clog: CollateralLog) -> None:
        while not stop.is_set():
            service.integrate(uow_factory(engine), clog)

    threads = [threading.Thread(target=integrator, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    try:
        asker = CollateralLog(SEG, ORIGIN, signer, settings)
        total = 0
        for i in range(15):
            move(engine, f"mint-{i}", EXCHANGE, SEG, 10 + i)
            total += 10 + i
            point = anchor_point(engine, asker)
            assert point.reserve == total
            assert point.reserve == _balance_in_log(engine, point.size)
            with CollateralUnitOfWork(engine, readonly=True) as uow:
                (found,) = uow.collateral.entries_by_transfer(SEG, f"mint-{i}")
                root = tlog.tree_root(point.size, partial(uow.collateral.hashes, SEG))
            assert found.idx < point.size
            assert root == point.root
    finally:
        stop.set()
        for t in threads:
            t.join()


def _leaf(engine: Engine, index: int) -> bytes:
    with CollateralUnitOfWork(engine, readonly=True) as uow:
        (body,) = uow.collateral.entry_range(SEG, index, 1)
    return tlog.leaf_hash(body)
