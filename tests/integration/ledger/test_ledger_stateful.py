"""Random operation sequences against the real ledger on SQLite and PostgreSQL.

A hypothesis state machine drives the service with a fixed clock and keeps a plain Python model
of what every operation must do: succeed (and move exactly these balances) or fail with exactly
this code and move nothing. After every step it checks, against the database:

- conservation and double entry (``check_invariants``), non-negative available balances;
- every wallet's posted and reserved balance equals the model's;
- every lock is in the model's state and resolved at most once (one resolving history entry);
- replays of earlier operations with the same id and body return the original result and change
  nothing; the same id with another body is refused with DU01 and changes nothing.

Each example runs on a fresh database.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gateway.errors import GatewayError
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
    Result,
    SetWalletStatus,
    WalletKind,
    WalletStatus,
)
from gateway.ledger.store import LedgerUnitOfWork, entry_t, lock_t
from tests.support.databases import PgDatabases, migrated_engine

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
ISSUANCE = "issuance-KZT"
RESOLVING_ENTRIES = {"lock_commit", "lock_release", "lock_expire"}

# ------------------------------------------------------------------ the model


@dataclass
class MWallet:
    posted: int = 0
    reserved: int = 0
    frozen: bool = False

    @property
    def available(self) -> int:
        return self.posted - self.reserved


@dataclass
class MLock:
    op: CreateLock
    preimage: str | None
    state: LockState = LockState.PENDING
    fulfilment: str | None = None


@dataclass
class Model:
    wallets: dict[str, MWallet] = field(default_factory=dict)
    wallet_ops: dict[str, OpenWallet] = field(default_factory=dict)
    locks: dict[str, MLock] = field(default_factory=dict)
    transfers: dict[str, Operation] = field(default_factory=dict)
    issued: int = 0
    redeemed: int = 0


class Refused(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


def _send(model: Model, wallet_id: str, amount: int) -> MWallet:
    w = model.wallets[wallet_id]
    if w.frozen:
        raise Refused("AC06")
    if w.available < amount:
        raise Refused("AM04")
    return w


def model_apply(model: Model, op: Operation, now: datetime, preimages: dict[str, str]) -> None:
    """What the ledger must do with ``op``: mutate ``model`` or raise ``Refused(code)``."""
    if isinstance(op, OpenWallet):
        if op.id in model.wallet_ops:
            if model.wallet_ops[op.id] != op:
                raise Refused("DU01")
            return
        model.wallet_ops[op.id] = op
        model.wallets[op.id] = MWallet()
    elif isinstance(op, SetWalletStatus):
        model.wallets[op.id].frozen = op.status is WalletStatus.FROZEN
    elif isinstance(op, MakeTransfer | Issue | Redeem):
        if op.id in model.transfers:
            if model.transfers[op.id] != op:
                raise Refused("DU01")
            return
        if isinstance(op, MakeTransfer):
            _send(model, op.debit_wallet_id, op.amount).posted -= op.amount
            model.wallets[op.credit_wallet_id].posted += op.amount
        elif isinstance(op, Issue):
            model.wallets[op.wallet_id].posted += op.amount
            model.issued += op.amount
        else:
            _send(model, op.wallet_id, op.amount).posted -= op.amount
            model.redeemed += op.amount
        model.transfers[op.id] = op
    elif isinstance(op, CreateLock):
        if op.id in model.locks:
            if model.locks[op.id].op != op:
                raise Refused("DU01")
            return
        _send(model, op.debit_wallet_id, op.amount).reserved += op.amount
        model.locks[op.id] = MLock(op, preimages.get(op.condition or ""))
    elif isinstance(op, CommitLock | ReleaseLock):
        lk = model.locks.get(op.id)
        if lk is None:
            raise Refused("LOCK_NOT_FOUND")
        committing = isinstance(op, CommitLock)
        if (
            committing
            and lk.state is LockState.POSTED
            and (lk.preimage is None or lk.fulfilment == op.fulfilment)  # type: ignore[union-attr]
        ):
            return  # replay of the commit
        if not committing and lk.state is LockState.VOIDED:
            return  # replay of the release
        expires = lk.op.expires_at
        if lk.state is LockState.EXPIRED or (
            lk.state is LockState.PENDING and expires is not None and now >= expires
        ):
            raise Refused("LOCK_EXPIRED")
        if lk.state is not LockState.PENDING:
            raise Refused("LOCK_RESOLVED")
        debit = model.wallets[lk.op.debit_wallet_id]
        if committing:
            if lk.preimage is not None and op.fulfilment != lk.preimage:  # type: ignore[union-attr]
                raise Refused("CONDITION_MISMATCH")
            debit.posted -= lk.op.amount
            model.wallets[lk.op.credit_wallet_id].posted += lk.op.amount
            lk.state = LockState.POSTED
            lk.fulfilment = op.fulfilment if lk.preimage else None  # type: ignore[union-attr]
        else:
            lk.state = LockState.VOIDED
        debit.reserved -= lk.op.amount
    else:  # pragma: no cover
        raise AssertionError(op)


# ------------------------------------------------------------------ the machine


class LedgerMachine(RuleBasedStateMachine):
    new_url: ClassVar[Callable[[], str]]

    def __init__(self) -> None:
        super().__init__()
        self.engine = migrated_engine(self.make_url())
        self.uow = LedgerUnitOfWork(self.engine)
        self.model = Model()
        self.now = T0
        self.seq = 0
        self.preimages: dict[str, str] = {}  # condition -> preimage
        self.done: list[tuple[list[Operation], list[Result]]] = []

    def make_url(self) -> str:
        return type(self).new_url()

    def teardown(self) -> None:
        self.engine.dispose()

    # helpers ---------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq}"

    def participants(self) -> list[str]:
        return sorted(self.model.wallets)

    def execute(self, ops: Sequence[Operation], *, remember: bool = True) -> None:
        """Run ``ops`` as one batch on the ledger and on the model; both must agree."""
        expected = copy.deepcopy(self.model)
        failure: tuple[int, str] | None = None
        for i, op in enumerate(ops):
            try:
                model_apply(expected, op, self.now, self.preimages)
            except Refused as r:
                failure = (i, r.code)
                break
        if failure is not None:
            with pytest.raises(GatewayError) as exc:
                service.apply(self.uow, list(ops), now=self.now)
            assert exc.value.code == failure[1], (ops, exc.value)
            if len(ops) > 1:
                assert exc.value.extra["operation_index"] == failure[0]
            return
        results = service.apply(self.uow, list(ops), now=self.now)
        assert [r.id for r in results] == [op.id for op in ops]
        self.model = expected
        if remember:
            self.done.append((list(ops), results))

    def wallet(self, data: st.DataObject, *, exclude: str | None = None) -> str:
        choices = [w for w in self.participants() if w != exclude]
        return data.draw(st.sampled_from(choices))

    def transfer_op(self, data: st.DataObject) -> Operation:
        kind = data.draw(st.sampled_from(["transfer", "issue", "redeem"]))
        amount = data.draw(st.integers(1, 300))
        wid = self.wallet(data)
        if kind == "issue":
            return Issue(id=self.next_id("i"), wallet_id=wid, amount=amount)
        if kind == "redeem":
            return Redeem(id=self.next_id("r"), wallet_id=wid, amount=amount)
        return MakeTransfer(
            id=self.next_id("t"),
            debit_wallet_id=wid,
            credit_wallet_id=self.wallet(data, exclude=wid),
            amount=amount,
        )

    def lock_op(self, data: st.DataObject) -> CreateLock:
        debit = self.wallet(data)
        condition = None
        if data.draw(st.booleans()):
            preimage = data.draw(st.binary(min_size=32, max_size=32)).hex()
            condition = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
            self.preimages[condition] = preimage
        minutes = data.draw(st.none() | st.integers(1, 2))
        return CreateLock(
            id=self.next_id("l"),
            debit_wallet_id=debit,
            credit_wallet_id=self.wallet(data, exclude=debit),
            amount=data.draw(st.integers(1, 200)),
            expires_at=None if minutes is None else self.now + timedelta(minutes=minutes),
            condition=condition,
        )

    # rules -----------------------------------------------------------------

    @initialize()
    def open_first_wallets(self) -> None:
        self.execute(
            [
                OpenWallet(id=f"w{i}", kind=WalletKind.PARTICIPANT, owner=f"owner {i}")
                for i in range(3)
            ]
        )
        self.execute([Issue(id="seed", wallet_id="w0", amount=1000)])

    @precondition(lambda self: len(self.model.wallets) < 5)
    @rule(kind=st.sampled_from([WalletKind.PARTICIPANT, WalletKind.EXCHANGE]))
    def open_wallet(self, kind: WalletKind) -> None:
        n = len(self.model.wallets)
        self.execute([OpenWallet(id=f"w{n}", kind=kind, owner=f"owner {n}")])

    @rule(data=st.data())
    def transfer_issue_or_redeem(self, data: st.DataObject) -> None:
        self.execute([self.transfer_op(data)])

    @rule(data=st.data())
    def freeze_or_unfreeze(self, data: st.DataObject) -> None:
        wid = self.wallet(data)
        frozen = self.model.wallets[wid].frozen
        status = WalletStatus.OPEN if frozen else WalletStatus.FROZEN
        self.execute([SetWalletStatus(id=wid, status=status)], remember=False)

    @rule(data=st.data())
    def create_lock(self, data: st.DataObject) -> None:
        self.execute([self.lock_op(data)])

    @precondition(lambda self: self.model.locks)
    @rule(data=st.data())
    def commit_lock(self, data: st.DataObject) -> None:
        lock_id = data.draw(st.sampled_from(sorted(self.model.locks)))
        lk = self.model.locks[lock_id]
        if lk.preimage is None:
            fulfilment = data.draw(st.none() | st.just("00" * 32))
        else:
            fulfilment = data.draw(st.sampled_from([lk.preimage, "ee" * 32, None]))
        self.execute([CommitLock(id=lock_id, fulfilment=fulfilment)])

    @precondition(lambda self: self.model.locks)
    @rule(data=st.data())
    def release_lock(self, data: st.DataObject) -> None:
        lock_id = data.draw(st.sampled_from(sorted(self.model.locks)))
        self.execute([ReleaseLock(id=lock_id)])

    @rule(minutes=st.integers(1, 2))
    def advance_clock(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule()
    def expire_locks(self) -> None:
        expired = service.expire_locks(self.uow, now=self.now)
        due = {
            i
            for i, lk in self.model.locks.items()
            if lk.state is LockState.PENDING
            and lk.op.expires_at is not None
            and lk.op.expires_at <= self.now
        }
        assert {lk.id for lk in expired} == due
        for i in due:
            lk = self.model.locks[i]
            lk.state = LockState.EXPIRED
            self.model.wallets[lk.op.debit_wallet_id].reserved -= lk.op.amount

    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        ops: list[Operation] = [self.transfer_op(data) for _ in range(data.draw(st.integers(1, 3)))]
        if data.draw(st.booleans()):
            lk = self.lock_op(data)
            ops.append(lk)
            if data.draw(st.booleans()):
                ops.append(CommitLock(id=lk.id, fulfilment=self.preimages.get(lk.condition or "")))
        self.execute(ops)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def replay_same_body(self, data: st.DataObject) -> None:
        ops, results = data.draw(st.sampled_from(self.done))
        before = self.stored()
        assert service.apply(self.uow, ops, now=self.now) == results
        assert self.stored() == before

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def replay_different_body(self, data: st.DataObject) -> None:
        ops, _ = data.draw(st.sampled_from(self.done))
        candidates = [
            op for op in ops if isinstance(op, MakeTransfer | Issue | Redeem | CreateLock)
        ]
        candidates += [op for op in ops if isinstance(op, OpenWallet)]
        if not candidates:
            return
        op = data.draw(st.sampled_from(candidates))
        changed: Operation
        if isinstance(op, OpenWallet):
            changed = replace(op, owner=op.owner + " (changed)")
        else:
            changed = replace(op, amount=op.amount + 1)
        before = self.stored()
        with pytest.raises(GatewayError) as exc:
            service.apply_one(self.uow, changed, now=self.now)
        assert exc.value.code == "DU01"
        assert self.stored() == before

    # checks ----------------------------------------------------------------

    def stored(self) -> tuple[Any, ...]:
        with LedgerUnitOfWork(self.engine) as u:
            wallets = {w.id: (w.posted, w.reserved, w.status) for w in u.ledger.all_wallets()}
            locks = {r.id: r.state for r in u.conn.execute(sa.select(lock_t.c.id, lock_t.c.state))}
            entries = u.conn.execute(sa.select(sa.func.count()).select_from(entry_t)).scalar_one()
        return wallets, locks, entries

    @invariant()
    def ledger_matches_the_model(self) -> None:
        report = service.check_invariants(self.uow)
        assert report.ok, report.violations
        assert report.issued_minus_redeemed == self.model.issued - self.model.redeemed
        with LedgerUnitOfWork(self.engine) as u:
            wallets = {w.id: w for w in u.ledger.all_wallets()}
            locks = {r.id: r for r in u.conn.execute(lock_t.select())}
            # A commit writes an entry on each side; the debit side's entries count resolutions.
            resolutions = Counter(
                (r.ref_id, r.wallet_id)
                for r in u.conn.execute(
                    sa.select(entry_t.c.ref_id, entry_t.c.wallet_id).where(
                        entry_t.c.op.in_(RESOLVING_ENTRIES)
                    )
                )
            )
        assert wallets[ISSUANCE].posted == self.model.redeemed - self.model.issued
        assert set(wallets) == {*self.model.wallets, ISSUANCE}
        for wid, mw in self.model.wallets.items():
            w = wallets[wid]
            assert (w.posted, w.reserved) == (mw.posted, mw.reserved), wid
            assert w.available >= 0
            assert (w.status is WalletStatus.FROZEN) == mw.frozen
        assert set(locks) == set(self.model.locks)
        for lid, ml in self.model.locks.items():
            assert locks[lid].state == ml.state.value, lid
            resolved = resolutions[(lid, ml.op.debit_wallet_id)]
            assert resolved == (0 if ml.state is LockState.PENDING else 1), lid


# ------------------------------------------------------------------ runs


def _run(machine: type[LedgerMachine], max_examples: int, steps: int) -> None:
    # Migrate once outside hypothesis: a broken migration then fails at once instead of being
    # "shrunk" example after example.
    migrated_engine(machine.new_url()).dispose()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_ledger_state_machine_on_sqlite(tmp_path: Path) -> None:
    def new_url() -> str:
        return f"sqlite:///{tempfile.mkdtemp(dir=tmp_path)}/ledger.db"

    machine = type("SqliteLedgerMachine", (LedgerMachine,), {"new_url": staticmethod(new_url)})
    _run(machine, max_examples=30, steps=30)


@pytest.mark.postgres
def test_ledger_state_machine_on_postgres(pg_database_factory: PgDatabases) -> None:
    def new_url() -> str:
        return pg_database_factory(migrated=True)

    machine = type("PostgresLedgerMachine", (LedgerMachine,), {"new_url": staticmethod(new_url)})
    _run(machine, max_examples=8, steps=25)
