"""PostgreSQL: a batch reads its wallets without row locks and writes their changes as deltas
under its checks (``gateway/ledger/moves.py``, ``pgmoves.py``), so a wallet is held only from
its write to the COMMIT. A concurrent batch that changes the wallet between the read and the
write makes the checks run again on the wallet as it then is: the outcome is the one the SQLite
ledger (the oracle, whose writers take the database in turn) gives to the same batches one
after the other.

Each race is made deterministic: the other batch runs first and holds its write uncommitted,
ours runs in a thread until it waits on that row, then the other commits.

In a unit of work's transaction the moves of all its batches are written together with the
COMMIT (``pgmoves.HeldMoves``): its later batches read their wallets with them added, a
rolled-back savepoint drops its own, and the transaction takes its wallets in one order, so
two transactions whose batches move the same wallets in opposite orders cannot deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from gateway.db import retrying
from gateway.errors import GatewayError
from gateway.ledger import service
from gateway.ledger.model import (
    CommitLock,
    CreateLock,
    Issue,
    MakeTransfer,
    OpenWallet,
    Operation,
    SetWalletStatus,
    WalletKind,
    WalletStatus,
)
from gateway.ledger.store import LedgerUnitOfWork
from gateway.pvp.store import PvPUnitOfWork
from tests.support.databases import migrated_engine
from tests.support.waiting import wait_for

WALLETS = ["w-a", "w-b", "w-c"]


def _funded(url: str) -> Engine:
    eng = migrated_engine(url, pool_size=4)
    service.apply(
        LedgerUnitOfWork(eng),
        [OpenWallet(w, WalletKind.PARTICIPANT, w) for w in WALLETS] + [Issue("fund-a", "w-a", 100)],
    )
    return eng


@pytest.fixture
def pg(pg_database_factory: Callable[[], str]) -> Iterator[Engine]:
    eng = _funded(pg_database_factory(migrated=True))
    yield eng
    eng.dispose()


@pytest.fixture
def oracle(tmp_path: Path) -> Iterator[Engine]:
    eng = _funded(f"sqlite:///{tmp_path / 'oracle.db'}")
    yield eng
    eng.dispose()


@contextmanager
def _held(engine: Engine, ops: list[Operation]) -> Iterator[None]:
    """``ops`` applied and written, not committed until the block ends."""
    uow = LedgerUnitOfWork(engine)
    with uow:
        service.execute(uow, ops)
        uow.ledger.wallet("w-a")  # waits for the writes queued before it: the rows are held
        yield
        uow.commit()


def _waiting_on_a_row(engine: Engine) -> bool:
    with engine.connect() as conn:
        n = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).scalar()
    return bool(n)


def _race(engine: Engine, first: list[Operation], ours: list[Operation]) -> object:
    """``first`` holds its writes while ``ours`` runs up to waiting on them; the outcome of
    ``ours`` (its results or its error)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(service.apply(LedgerUnitOfWork(engine), ours))
        except GatewayError as exc:
            outcome.append(exc)

    with _held(engine, first):
        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: _waiting_on_a_row(engine), "our batch waiting on the held wallet")
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]


def _in_turn(engine: Engine, first: list[Operation], ours: list[Operation]) -> object:
    service.apply(LedgerUnitOfWork(engine), first)
    try:
        return service.apply(LedgerUnitOfWork(engine), ours)
    except GatewayError as exc:
        return exc


def _books(engine: Engine) -> dict[str, tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, posted, reserved FROM ledger_wallet").all()
    return {r[0]: (r[1], r[2]) for r in rows}


def _history(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT wallet_id, op, ref_id, posted_delta, reserved_delta, posted_after,"
                " reserved_after FROM ledger_entry ORDER BY seq"
            )
        ]


def _same(got: object, expected: object) -> None:
    if isinstance(expected, GatewayError):
        assert isinstance(got, GatewayError), got
        assert (type(got), got.code, got.extra) == (type(expected), expected.code, expected.extra)
    else:
        assert not isinstance(got, GatewayError), got


CASES = {
    "a spend that leaves too little refuses the lock": (
        [MakeTransfer("t-1", "w-a", "w-b", 60)],
        [CreateLock("lk-1", "w-a", "w-c", 50)],
    ),
    "a spend that leaves enough lets the lock through": (
        [MakeTransfer("t-1", "w-a", "w-b", 30)],
        [CreateLock("lk-1", "w-a", "w-c", 50)],
    ),
    "a batch is refused at the operation that no longer fits": (
        [MakeTransfer("t-1", "w-a", "w-b", 60)],
        [CreateLock("lk-1", "w-a", "w-c", 30), CreateLock("lk-2", "w-a", "w-c", 20)],
    ),
    "a frozen sender refuses the transfer": (
        [SetWalletStatus("w-a", WalletStatus.FROZEN)],
        [MakeTransfer("t-2", "w-a", "w-b", 10)],
    ),
    "a closed beneficiary refuses the lock": (
        [SetWalletStatus("w-c", WalletStatus.CLOSED)],
        [CreateLock("lk-1", "w-a", "w-c", 10)],
    ),
    "a closed beneficiary refuses its lock in a batch": (
        [SetWalletStatus("w-c", WalletStatus.CLOSED)],
        [CreateLock("lk-1", "w-a", "w-b", 10), CreateLock("lk-2", "w-a", "w-c", 10)],
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("case", list(CASES))
def test_a_wallet_changed_after_the_read_gets_the_outcome_of_batches_in_turn(
    case: str, pg: Engine, oracle: Engine
) -> None:
    first, ours = CASES[case]
    got = _race(pg, first, ours)
    expected = _in_turn(oracle, first, ours)
    _same(got, expected)
    assert _books(pg) == _books(oracle)
    assert _history(pg) == _history(oracle)
    assert service.check_invariants(LedgerUnitOfWork(pg)).ok


@pytest.mark.postgres
def test_a_batch_reads_its_wallets_without_holding_them(pg: Engine) -> None:
    """Until its writes, another transaction may lock the batch's wallets (NOWAIT)."""
    uow = LedgerUnitOfWork(pg)
    for lock_wallets, free in ((False, True), (True, False)):
        with uow:
            uow.ledger.read_for_batch(set(), set(), {"w-a"}, set(), lock_wallets=lock_wallets)
            with pg.connect() as other:
                try:
                    other.execute(
                        sa.text("SELECT id FROM ledger_wallet WHERE id = 'w-a' FOR UPDATE NOWAIT")
                    ).all()
                    got = True
                except OperationalError:
                    got = False
                other.rollback()
        assert got is free


def _locked_now(engine: Engine, wallet_id: str) -> bool:
    """Whether another transaction holds ``wallet_id``'s row (a NOWAIT probe)."""
    with engine.connect() as other:
        try:
            other.execute(
                sa.text("SELECT id FROM ledger_wallet WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": wallet_id},
            ).all()
        except OperationalError:
            return True
        finally:
            other.rollback()
    return False


@pytest.mark.postgres
def test_a_transaction_takes_its_wallets_only_with_its_commit(pg: Engine, oracle: Engine) -> None:
    """Ours moves w-b and w-c, then w-a and w-b; the other w-a and w-c in between. Written
    batch by batch, ours held w-c while the other held w-a and asked for it: a deadlock."""
    for eng in (pg, oracle):
        service.apply(LedgerUnitOfWork(eng), [Issue("fund-b", "w-b", 100)])
    ours = LedgerUnitOfWork(pg)
    with ours:
        service.execute(ours, [MakeTransfer("t-1", "w-b", "w-c", 10)])
        assert ours.pg is not None
        ours.pg.sync()  # everything queued so far has run
        assert not any(_locked_now(pg, w) for w in WALLETS)
        other = threading.Thread(
            target=service.apply,
            args=(LedgerUnitOfWork(pg), [MakeTransfer("t-2", "w-a", "w-c", 10)]),
        )
        other.start()
        other.join(timeout=30)
        assert not other.is_alive(), "the other transaction waited for ours"
        service.execute(ours, [MakeTransfer("t-3", "w-a", "w-b", 20)])
        ours.commit()
    service.apply(LedgerUnitOfWork(oracle), [MakeTransfer("t-2", "w-a", "w-c", 10)])
    uow = LedgerUnitOfWork(oracle)
    with uow:
        service.execute(uow, [MakeTransfer("t-1", "w-b", "w-c", 10)])
        service.execute(uow, [MakeTransfer("t-3", "w-a", "w-b", 20)])
        uow.commit()
    assert _books(pg) == _books(oracle)
    assert _history(pg) == _history(oracle)


class _Undone(Exception):
    pass


def _one_transaction(engine: Engine) -> list[object]:
    """Batches in one transaction, one of them in a savepoint rolled back: what each gave."""
    outcomes: list[object] = []
    uow = PvPUnitOfWork(engine)

    def run(ops: list[Operation]) -> None:
        try:
            outcomes.append(service.execute(uow, ops))
        except GatewayError as exc:
            outcomes.append(exc)

    with uow:
        run([MakeTransfer("t-1", "w-a", "w-b", 70)])
        run([CreateLock("lk-1", "w-a", "w-c", 40)])  # 30 left: refused
        try:
            with uow.savepoint():
                run([MakeTransfer("t-2", "w-b", "w-c", 50)])
                raise _Undone
        except _Undone:
            pass
        run([CreateLock("lk-2", "w-b", "w-c", 70)])  # t-2 undone: all of w-b's 70
        run([CommitLock("lk-2")])
        run([MakeTransfer("t-3", "w-c", "w-a", 60)])
        run([CreateLock("lk-3", "w-a", "w-b", 40), CreateLock("lk-4", "w-a", "w-b", 60)])
        uow.commit()
    return outcomes


@pytest.mark.postgres
def test_later_batches_of_a_transaction_see_what_the_earlier_ones_moved(
    pg: Engine, oracle: Engine
) -> None:
    got, expected = _one_transaction(pg), _one_transaction(oracle)
    assert len(got) == len(expected) == 7
    for g, e in zip(got, expected, strict=True):
        _same(g, e)
    assert [isinstance(o, GatewayError) for o in expected] == [
        False, True, False, False, False, False, True
    ]  # fmt: skip
    assert _books(pg) == _books(oracle)
    assert _history(pg) == _history(oracle)
    assert service.check_invariants(LedgerUnitOfWork(pg)).ok


@pytest.mark.postgres
def test_a_wallet_changed_before_the_commit_runs_every_batch_again(
    pg: Engine, oracle: Engine
) -> None:
    """The first batch's lock still fits once the other transaction has spent, the second's no
    longer does: the transaction's moves fail their checks at the COMMIT, and the unit runs
    again on the wallet as it now is."""
    first = [MakeTransfer("t-1", "w-a", "w-b", 60)]
    batches = [[CreateLock("lk-1", "w-a", "w-c", 30)], [CreateLock("lk-2", "w-a", "w-c", 20)]]

    def ours(engine: Engine) -> object:
        uow = LedgerUnitOfWork(engine)
        try:
            return retrying(uow, lambda: [service.execute(uow, ops) for ops in batches])
        except GatewayError as exc:
            return exc

    outcome: list[object] = []
    with _held(pg, first):
        thread = threading.Thread(target=lambda: outcome.append(ours(pg)))
        thread.start()
        wait_for(lambda: _waiting_on_a_row(pg), "our COMMIT waiting on the held wallet")
    thread.join(timeout=60)
    assert not thread.is_alive()
    service.apply(LedgerUnitOfWork(oracle), first)
    expected = ours(oracle)
    assert isinstance(expected, GatewayError)
    _same(outcome[0], expected)
    assert _books(pg) == _books(oracle)
    assert _history(pg) == _history(oracle)
