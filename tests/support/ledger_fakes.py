"""An in-memory ledger repository and unit of work, for running the ledger service without I/O
(the ledger's unit tests, and the PvP's, whose fake extends it: ``tests/unit/pvp/fakes.py``).

The fake keeps the two properties of the SQL store that the service relies on:

- transactions: ``__enter__`` takes a snapshot, ``__exit__`` restores it unless ``commit()`` was
  called, so an all-or-nothing batch that fails leaves no trace, exactly as a rollback would;
- constraints: ids are unique and the CHECK constraints of ``gateway.ledger.store`` (reserved is
  never negative, available is never negative outside the issuance wallet) are enforced on every
  write, so a service bug that the database would refuse fails here too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.errors import TransientError
from gateway.ledger import service
from gateway.ledger.model import (
    Entry,
    Issue,
    Lock,
    LockState,
    OpenWallet,
    Operation,
    Result,
    Transfer,
    TransferKind,
    Wallet,
    WalletKind,
    WalletStatus,
    issuance_wallet_id,
)


class ConstraintViolation(Exception):
    """What the database would raise as an IntegrityError."""


@dataclass
class _State:
    wallets: dict[str, Wallet] = field(default_factory=dict)
    locks: dict[str, Lock] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> _State:
        # Domain objects are frozen, so copying the containers is a full snapshot.
        return _State(
            dict(self.wallets), dict(self.locks), dict(self.transfers), list(self.entries)
        )


def issuance_wallet(currency: str = "KZT") -> Wallet:
    """The wallet that the migration creates."""
    return Wallet(
        id=issuance_wallet_id(currency),
        kind=WalletKind.ISSUANCE,
        owner="National Bank of Kazakhstan",
        currency=currency,
        status=WalletStatus.OPEN,
        posted=0,
        reserved=0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class FakeLedgerRepository:
    """Implements ``gateway.ledger.service.LedgerRepository`` on a ``_State``."""

    def __init__(self, state: _State) -> None:
        self.state = state

    # reads ----------------------------------------------------------------

    def wallets_for_update(self, ids: Collection[str]) -> dict[str, Wallet]:
        return {i: self.state.wallets[i] for i in sorted(ids) if i in self.state.wallets}

    def locks_for_update(self, ids: Collection[str]) -> dict[str, Lock]:
        return {i: self.state.locks[i] for i in sorted(ids) if i in self.state.locks}

    def transfers(self, ids: Collection[str]) -> dict[str, Transfer]:
        return {i: self.state.transfers[i] for i in ids if i in self.state.transfers}

    def wallet(self, wallet_id: str) -> Wallet | None:
        return self.state.wallets.get(wallet_id)

    def lock(self, lock_id: str) -> Lock | None:
        return self.state.locks.get(lock_id)

    def transfer(self, transfer_id: str) -> Transfer | None:
        return self.state.transfers.get(transfer_id)

    def history(self, wallet_id: str, after_seq: int, limit: int) -> list[Entry]:
        rows = [e for e in self.state.entries if e.wallet_id == wallet_id and e.seq > after_seq]
        return sorted(rows, key=lambda e: e.seq)[:limit]

    def expired_lock_ids(self, now: datetime, limit: int) -> list[str]:
        due = [
            lk
            for lk in self.state.locks.values()
            if lk.state is LockState.PENDING and lk.expires_at is not None and lk.expires_at <= now
        ]
        return [lk.id for lk in sorted(due, key=lambda lk: (lk.expires_at, lk.id))][:limit]

    def has_pending_locks_to(self, wallet_id: str) -> bool:
        return any(
            lk.state is LockState.PENDING and lk.credit_wallet_id == wallet_id
            for lk in self.state.locks.values()
        )

    def all_wallets(self) -> list[Wallet]:
        return [self.state.wallets[i] for i in sorted(self.state.wallets)]

    def pending_reserved_by_wallet(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for lk in self.state.locks.values():
            if lk.state is LockState.PENDING:
                totals[lk.debit_wallet_id] = totals.get(lk.debit_wallet_id, 0) + lk.amount
        return totals

    def transfer_totals(self) -> dict[TransferKind, int]:
        totals: dict[TransferKind, int] = {}
        for t in self.state.transfers.values():
            totals[t.kind] = totals.get(t.kind, 0) + t.amount
        return totals

    def entry_totals_by_wallet(self) -> dict[str, tuple[int, int]]:
        totals: dict[str, tuple[int, int]] = {}
        for e in self.state.entries:
            p, r = totals.get(e.wallet_id, (0, 0))
            totals[e.wallet_id] = (p + e.posted_delta, r + e.reserved_delta)
        return totals

    # writes ---------------------------------------------------------------

    @staticmethod
    def _check_wallet(w: Wallet) -> None:
        if w.reserved < 0:
            raise ConstraintViolation(f"ck_wallet_reserved_nonneg: {w}")
        if w.kind is not WalletKind.ISSUANCE and w.posted < w.reserved:
            raise ConstraintViolation(f"ck_wallet_available_nonneg: {w}")

    def insert_wallets(self, wallets: Sequence[Wallet]) -> None:
        for w in wallets:
            if w.id in self.state.wallets:
                raise ConstraintViolation(f"duplicate wallet {w.id}")
            self._check_wallet(w)
            self.state.wallets[w.id] = w

    def update_wallets(self, wallets: Sequence[Wallet]) -> None:
        for w in wallets:
            if w.id not in self.state.wallets:
                raise ConstraintViolation(f"update of a missing wallet {w.id}")
            self._check_wallet(w)
            self.state.wallets[w.id] = w

    def insert_transfers(self, transfers: Sequence[Transfer]) -> None:
        for t in transfers:
            if t.id in self.state.transfers:
                raise ConstraintViolation(f"duplicate transfer {t.id}")
            if t.amount <= 0:
                raise ConstraintViolation("ck_transfer_amount_pos")
            self.state.transfers[t.id] = t

    def insert_locks(self, locks: Sequence[Lock]) -> None:
        for lk in locks:
            if lk.id in self.state.locks:
                raise ConstraintViolation(f"duplicate lock {lk.id}")
            if lk.amount <= 0:
                raise ConstraintViolation("ck_lock_amount_pos")
            self.state.locks[lk.id] = lk

    def update_locks(self, locks: Sequence[Lock]) -> None:
        for lk in locks:
            if lk.id not in self.state.locks:
                raise ConstraintViolation(f"update of a missing lock {lk.id}")
            self.state.locks[lk.id] = lk

    def insert_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        for row in entries:
            if row["wallet_id"] not in self.state.wallets:
                raise ConstraintViolation(f"entry for a missing wallet {row['wallet_id']}")
            seq = len(self.state.entries) + 1
            self.state.entries.append(Entry(seq=seq, **row))


class FakeUnitOfWork:
    """Implements ``gateway.ledger.service.UnitOfWork``; see the module docstring.

    ``fail_commits`` makes the next that many commits raise a ``TransientError`` (after the
    snapshot is restored), to exercise the service's retry loop.
    """

    def __init__(self, *wallets: Wallet) -> None:
        self._state = _State()
        for w in wallets or (issuance_wallet(),):
            self._state.wallets[w.id] = w
        self._snapshot: _State | None = None
        self._committed = False
        self.ledger = FakeLedgerRepository(self._state)
        self.commits = 0
        self.rollbacks = 0
        self.fail_commits = 0

    def __enter__(self) -> FakeUnitOfWork:
        assert self._snapshot is None, "unit of work entered twice"
        self._snapshot = self._state.copy()
        self._committed = False
        return self

    def commit(self) -> None:
        assert self._snapshot is not None, "commit outside the with block"
        if self.fail_commits:
            self.fail_commits -= 1
            raise TransientError("simulated serialization failure")
        self._committed = True
        self.commits += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._snapshot is not None
        if not self._committed:
            self._restore(self._snapshot)
            self.rollbacks += 1
        self._snapshot = None

    def _restore(self, snapshot: _State) -> None:
        self._state.wallets = snapshot.wallets
        self._state.locks = snapshot.locks
        self._state.transfers = snapshot.transfers
        self._state.entries = snapshot.entries

    # read access for assertions, outside any transaction -------------------

    @property
    def wallets(self) -> dict[str, Wallet]:
        return dict(self._state.wallets)

    @property
    def locks(self) -> dict[str, Lock]:
        return dict(self._state.locks)

    @property
    def transfers(self) -> dict[str, Transfer]:
        return dict(self._state.transfers)

    @property
    def entries(self) -> list[Entry]:
        return list(self._state.entries)


# --------------------------------------------------------------------------- scenario helpers

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
"""The fixed clock of the unit tests: every service call passes ``now=``."""


def run(uow: FakeUnitOfWork, *ops: Operation, now: datetime = NOW) -> list[Result]:
    return service.apply(uow, list(ops), now=now)


def run_one(uow: FakeUnitOfWork, op: Operation, now: datetime = NOW) -> Any:
    return service.apply_one(uow, op, now=now)


def open_wallets(
    uow: FakeUnitOfWork, *ids: str, currency: str = "KZT", kind: WalletKind = WalletKind.PARTICIPANT
) -> None:
    run(uow, *(OpenWallet(id=i, kind=kind, owner=f"owner of {i}", currency=currency) for i in ids))


def fund(uow: FakeUnitOfWork, wallet_id: str, amount: int) -> None:
    run_one(
        uow, Issue(id=f"fund-{wallet_id}-{len(uow.transfers)}", wallet_id=wallet_id, amount=amount)
    )


def balances(uow: FakeUnitOfWork) -> dict[str, tuple[int, int]]:
    """(posted, reserved) of every wallet: compare before and after to see that nothing moved."""
    return {w.id: (w.posted, w.reserved) for w in uow.wallets.values()}


__all__ = [
    "NOW",
    "ConstraintViolation",
    "FakeLedgerRepository",
    "FakeUnitOfWork",
    "balances",
    "fund",
    "issuance_wallet",
    "open_wallets",
    "run",
    "run_one",
]
