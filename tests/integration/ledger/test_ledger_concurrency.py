"""Many threads, separate connections, a few hot wallets: the ledger must stay exact.

Every call either succeeds or is refused with a domain error; a transient conflict (deadlock,
serialization failure, lost unique-key race, SQLite's busy writer) must never reach a caller,
because the service retries it. Afterwards the books balance, every lock is in the state its
callers were told, and the DT in circulation is what was issued minus what was redeemed.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from gateway.errors import GatewayError, Unavailable
from gateway.ledger import service
from gateway.ledger.model import (
    CommitLock,
    CreateLock,
    Issue,
    LockState,
    MakeTransfer,
    OpenWallet,
    Operation,
    Redeem,
    ReleaseLock,
    WalletKind,
)
from gateway.ledger.store import LedgerUnitOfWork, lock_t, transfer_t
from tests.support.databases import migrated_engine

pytestmark = pytest.mark.slow

HOT = ["hot-a", "hot-b", "hot-c", "hot-d"]
SEED = 20_000
WORKERS = 8
OPS_PER_WORKER = 260  # 8 x 260 = 2080 calls
RACERS = 12


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh database with the hot wallets funded; a connection per thread."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'concurrency.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")(migrated=True)
    eng = migrated_engine(url, pool_size=16)
    service.apply(
        LedgerUnitOfWork(eng),
        [OpenWallet(id=w, kind=WalletKind.PARTICIPANT, owner=w) for w in HOT]
        + [Issue(id=f"seed-{w}", wallet_id=w, amount=SEED) for w in HOT],
    )
    yield eng
    eng.dispose()


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"


@dataclass
class Outcomes:
    """What the callers were told, gathered from every worker."""

    mutex: threading.Lock = field(default_factory=threading.Lock)
    issued: int = SEED * len(HOT)
    redeemed: int = 0
    locks: list[tuple[str, str | None]] = field(default_factory=list)  # (id, preimage)
    preimages: dict[str, str] = field(default_factory=dict)  # condition -> preimage
    committed: set[str] = field(default_factory=set)
    released: set[str] = field(default_factory=set)
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, ops: list[Operation], results: list[Any]) -> None:
        with self.mutex:
            for op, result in zip(ops, results, strict=True):
                if isinstance(op, Issue):
                    self.issued += op.amount
                elif isinstance(op, Redeem):
                    self.redeemed += op.amount
                elif isinstance(op, CreateLock):
                    self.locks.append((op.id, self.preimages.get(op.condition or "")))
                elif isinstance(op, CommitLock):
                    assert result.state is LockState.POSTED
                    self.committed.add(op.id)
                elif isinstance(op, ReleaseLock):
                    assert result.state is LockState.VOIDED
                    self.released.add(op.id)


def random_ops(rng: random.Random, op_id: str, out: Outcomes) -> list[Operation]:
    a, b, c = rng.sample(HOT, 3)
    roll = rng.random()
    if roll < 0.35:
        amount = rng.randint(1, 900)
        return [MakeTransfer(id=op_id, debit_wallet_id=a, credit_wallet_id=b, amount=amount)]
    if roll < 0.55:
        condition = None
        if rng.random() < 0.5:
            preimage = rng.randbytes(32).hex()
            condition = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
            with out.mutex:
                out.preimages[condition] = preimage
        amount = rng.randint(1, 700)
        return [
            CreateLock(
                id=op_id, debit_wallet_id=a, credit_wallet_id=b, amount=amount, condition=condition
            )
        ]
    with out.mutex:
        known = list(out.locks)
    if roll < 0.75 and known:
        lock_id, preimage = rng.choice(known)
        if preimage is not None and rng.random() < 0.2:
            preimage = "00" * 32  # wrong: CONDITION_MISMATCH, or LOCK_RESOLVED if beaten to it
        return [CommitLock(id=lock_id, fulfilment=preimage)]
    if roll < 0.88 and known:
        return [ReleaseLock(id=rng.choice(known)[0])]
    if roll < 0.92:
        return [Issue(id=op_id, wallet_id=a, amount=rng.randint(1, 500))]
    if roll < 0.96:
        return [Redeem(id=op_id, wallet_id=a, amount=rng.randint(1, 500))]
    legs = [(a, b), (b, c), (c, a)]
    return [
        MakeTransfer(id=f"{op_id}-{i}", debit_wallet_id=d, credit_wallet_id=k, amount=400 - i)
        for i, (d, k) in enumerate(legs)
    ]


def test_random_concurrent_operations_keep_the_books_exact(engine: Engine) -> None:
    out = Outcomes()

    def worker(i: int) -> None:
        rng = random.Random(1000 + i)
        uow = LedgerUnitOfWork(engine)
        for n in range(OPS_PER_WORKER):
            ops = random_ops(rng, f"w{i}-{n}", out)
            try:
                results = service.apply(uow, ops)
            except Unavailable as exc:
                out.failures.append(f"{ops}: transient error reached the caller: {exc!r}")
            except GatewayError as exc:
                with out.mutex:
                    out.codes[exc.code] += 1
            except Exception as exc:
                out.failures.append(f"{ops}: {exc!r}")
            else:
                out.record(ops, results)

    run_threads(WORKERS, worker)

    assert out.failures == [], out.failures[:5]
    assert sum(out.codes.values()) < WORKERS * OPS_PER_WORKER // 2, out.codes
    assert out.committed, "no lock was committed: the mix is not exercising locks"
    assert out.released, "no lock was released: the mix is not exercising locks"
    assert not out.committed & out.released, "a lock was both committed and released"
    report = service.check_invariants(LedgerUnitOfWork(engine))
    assert report.ok, report.violations
    assert report.issued_minus_redeemed == out.issued - out.redeemed

    uow = LedgerUnitOfWork(engine)
    with uow:
        wallets = {w.id: w for w in uow.ledger.all_wallets()}
        locks = {r.id: r for r in uow.conn.execute(lock_t.select())}
    assert sum(wallets[w].posted for w in HOT) == out.issued - out.redeemed
    assert {i for i, _ in out.locks} == set(locks)
    reserved: Counter[str] = Counter()
    for lock_id, row in locks.items():
        if lock_id in out.committed:
            assert row.state == LockState.POSTED.value, lock_id
        elif lock_id in out.released:
            assert row.state == LockState.VOIDED.value, lock_id
        else:
            assert row.state == LockState.PENDING.value, lock_id
            reserved[row.debit_wallet_id] += row.amount
    for w in HOT:
        assert wallets[w].reserved == reserved[w], w
        assert wallets[w].available >= 0, w


# ------------------------------------------------------------------ same-id races


def race(engine: Engine, make_ops: Callable[[int], list[Operation]]) -> list[Any]:
    """Submit from ``RACERS`` threads at once; returns each caller's result or error."""
    barrier = threading.Barrier(RACERS)
    outcomes: list[Any] = [None] * RACERS

    def racer(i: int) -> None:
        uow = LedgerUnitOfWork(engine)
        barrier.wait()
        try:
            outcomes[i] = service.apply(uow, make_ops(i))
        except Exception as exc:
            outcomes[i] = exc

    run_threads(RACERS, racer)
    return outcomes


def balances(engine: Engine) -> dict[str, tuple[int, int]]:
    with LedgerUnitOfWork(engine) as uow:
        return {w.id: (w.posted, w.reserved) for w in uow.ledger.all_wallets()}


def test_same_transfer_submitted_concurrently_moves_funds_once(engine: Engine) -> None:
    op = MakeTransfer(id="dup", debit_wallet_id="hot-a", credit_wallet_id="hot-b", amount=777)
    outcomes = race(engine, lambda _: [op])
    assert all(isinstance(o, list) for o in outcomes), outcomes
    assert all(o == outcomes[0] for o in outcomes)
    assert balances(engine)["hot-a"] == (SEED - 777, 0)
    assert balances(engine)["hot-b"] == (SEED + 777, 0)
    with LedgerUnitOfWork(engine) as uow:
        rows = list(uow.conn.execute(transfer_t.select().where(transfer_t.c.id == "dup")))
    assert len(rows) == 1
    assert service.check_invariants(LedgerUnitOfWork(engine)).ok


def test_same_transfer_id_with_different_bodies_has_one_winner(engine: Engine) -> None:
    def ops(i: int) -> list[Operation]:
        return [
            MakeTransfer(id="dup", debit_wallet_id="hot-a", credit_wallet_id="hot-b", amount=i + 1)
        ]

    outcomes = race(engine, ops)
    winners = [o for o in outcomes if isinstance(o, list)]
    losers = [o for o in outcomes if not isinstance(o, list)]
    assert len({w[0].amount for w in winners}) == 1, winners
    assert all(isinstance(e, GatewayError) and e.code == "DU01" for e in losers), losers
    amount = winners[0][0].amount
    assert balances(engine)["hot-b"] == (SEED + amount, 0)


def test_same_lock_created_concurrently_reserves_once(engine: Engine) -> None:
    op = CreateLock(id="l", debit_wallet_id="hot-a", credit_wallet_id="hot-b", amount=500)
    outcomes = race(engine, lambda _: [op])
    assert all(isinstance(o, list) and o == outcomes[0] for o in outcomes), outcomes
    assert balances(engine)["hot-a"] == (SEED, 500)


def test_same_lock_committed_concurrently_pays_once(engine: Engine) -> None:
    preimage = "5a" * 32
    condition = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
    service.apply_one(
        LedgerUnitOfWork(engine),
        CreateLock(
            id="l",
            debit_wallet_id="hot-a",
            credit_wallet_id="hot-b",
            amount=500,
            condition=condition,
        ),
    )
    outcomes = race(engine, lambda _: [CommitLock(id="l", fulfilment=preimage)])
    assert all(isinstance(o, list) for o in outcomes), outcomes
    assert all(o == outcomes[0] for o in outcomes)
    assert outcomes[0][0].state is LockState.POSTED
    assert balances(engine)["hot-a"] == (SEED - 500, 0)
    assert balances(engine)["hot-b"] == (SEED + 500, 0)
    assert service.check_invariants(LedgerUnitOfWork(engine)).ok


def test_commit_racing_release_resolves_the_lock_once(engine: Engine) -> None:
    service.apply_one(
        LedgerUnitOfWork(engine),
        CreateLock(id="l", debit_wallet_id="hot-a", credit_wallet_id="hot-b", amount=500),
    )

    def ops(i: int) -> list[Operation]:
        return [CommitLock(id="l")] if i % 2 else [ReleaseLock(id="l")]

    outcomes = race(engine, ops)
    results = [o for o in outcomes if isinstance(o, list)]
    winners = {o[0].state for o in results}
    losers = [o for o in outcomes if not isinstance(o, list)]
    assert len(winners) == 1, outcomes
    assert all(r == results[0] for r in results)
    assert all(isinstance(e, GatewayError) and e.code == "LOCK_RESOLVED" for e in losers), losers
    posted = winners == {LockState.POSTED}
    assert balances(engine)["hot-b"] == (SEED + 500 if posted else SEED, 0)
    assert balances(engine)["hot-a"] == (SEED - 500 if posted else SEED, 0)
    assert service.check_invariants(LedgerUnitOfWork(engine)).ok
