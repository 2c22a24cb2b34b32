"""Ledger use cases. The only place that commits ledger changes.

Every command goes through :func:`execute` (one operation is a batch of one), which:

1. validates every operation before touching the database;
2. row-locks what the batch touches in the global order (locks by id, then wallets by id), so
   concurrent batches on PostgreSQL queue instead of deadlocking;
3. applies the operations in order to in-memory domain objects, replaying any operation whose
   id already exists with the same body and refusing one whose body differs;
4. writes the outcome with a handful of ``executemany`` statements.

On PostgreSQL a row lock lasts to the COMMIT, and a participant's wallet is in every PvP of
theirs: there a batch that neither opens wallets nor changes a status reads its wallets without
locking them, and writes their changes last, as deltas under the checks it made
(:mod:`gateway.ledger.moves`), locking them in id order only then; a wallet that no longer passes
them fails the transaction as a serialization failure, and the batch runs again on the wallet as
it now is, so the outcome is the one of batches taken in turn (the SQLite ledger's).

A batch is all or nothing: the first refused operation rolls the whole batch back and the error
names its index. We chose that over per-operation outcomes because the gateway's own callers
(a PvP leg, a mint) need several movements to happen together or not at all, and a caller that
wants independent outcomes can send independent batches; ids make every retry safe either way.

:func:`apply` wraps :func:`execute` in a transaction and retries transient database conflicts,
so no deadlock or serialization failure reaches a caller. Other capabilities call
:func:`execute` inside their own unit of work to change the ledger and write their outbox rows in
the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from gateway.db import retrying, utcnow
from gateway.errors import GatewayError, IdempotencyConflict, InvalidInput
from gateway.ledger.errors import (
    LockNotFound,
    NotAllowed,
    TransferNotFound,
    WalletExists,
    WalletNotFound,
)
from gateway.ledger.model import (
    MAX_AMOUNT,
    CommitLock,
    CreateLock,
    Entry,
    HistoryPage,
    InvariantReport,
    Issue,
    Lock,
    LockState,
    MakeTransfer,
    OpenWallet,
    Operation,
    Redeem,
    ReleaseLock,
    Result,
    SetWalletStatus,
    Transfer,
    TransferKind,
    Wallet,
    WalletKind,
    WalletStatus,
    issuance_wallet_id,
)
from gateway.ledger.moves import Needs

T = TypeVar("T")


class LedgerRepository(Protocol):
    def wallets_for_update(self, ids: Sequence[str] | set[str]) -> dict[str, Wallet]: ...
    def locks_for_update(self, ids: Sequence[str] | set[str]) -> dict[str, Lock]: ...
    def transfers(self, ids: Sequence[str] | set[str]) -> dict[str, Transfer]: ...
    def wallet(self, wallet_id: str) -> Wallet | None: ...
    def lock(self, lock_id: str) -> Lock | None: ...
    def transfer(self, transfer_id: str) -> Transfer | None: ...
    def history(self, wallet_id: str, after_seq: int, limit: int) -> list[Entry]: ...
    def expired_lock_ids(self, now: datetime, limit: int) -> list[str]: ...
    def has_pending_locks_to(self, wallet_id: str) -> bool: ...
    def all_wallets(self) -> list[Wallet]: ...
    def pending_reserved_by_wallet(self) -> dict[str, int]: ...
    def transfer_totals(self) -> dict[TransferKind, int]: ...
    def entry_totals_by_wallet(self) -> dict[str, tuple[int, int]]: ...
    def insert_wallets(self, wallets: Sequence[Wallet]) -> None: ...
    def update_wallets(self, wallets: Sequence[Wallet]) -> None: ...
    def insert_transfers(self, transfers: Sequence[Transfer]) -> None: ...
    def insert_locks(self, locks: Sequence[Lock]) -> None: ...
    def update_locks(self, locks: Sequence[Lock]) -> None: ...
    def insert_entries(self, entries: Sequence[dict[str, Any]]) -> None: ...


class UnitOfWork(Protocol):
    @property
    def ledger(self) -> LedgerRepository: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any: ...
    def commit(self) -> None: ...


# ------------------------------------------------------------------ batch application


class _Batch:
    """In-memory working set of one batch; flushed to the repository at the end."""

    def __init__(
        self,
        wallets: dict[str, Wallet],
        locks: dict[str, Lock],
        transfers: dict[str, Transfer],
        now: datetime,
    ) -> None:
        self.wallets = wallets
        self.locks = locks
        self.transfers = transfers
        self.now = now
        self.new_wallets: dict[str, Wallet] = {}
        self.dirty_wallets: set[str] = set()
        self.new_locks: set[str] = set()
        self.dirty_locks: set[str] = set()
        self.new_transfers: list[Transfer] = []
        self.entries: list[dict[str, Any]] = []
        self.awaited: set[str] = set()
        """Wallets that pending locks stored before this batch credit: they cannot close."""
        self.needs: dict[str, Needs] = {}
        """What the batch's operations checked of each wallet's status (for conditional
        writes: :mod:`gateway.ledger.moves`)."""

    def _need(self, wallet_id: str, need: Needs) -> None:
        if self.needs.get(wallet_id, Needs.NOTHING) < need:
            self.needs[wallet_id] = need

    # helpers ---------------------------------------------------------------

    def _wallet(self, wallet_id: str) -> Wallet:
        try:
            return self.wallets[wallet_id]
        except KeyError:
            raise WalletNotFound(f"no wallet {wallet_id}", wallet_id=wallet_id) from None

    def _set_wallet(
        self, w: Wallet, op: str, ref_id: str, posted_delta: int, reserved_delta: int
    ) -> None:
        self.wallets[w.id] = w
        if w.id not in self.new_wallets:
            self.dirty_wallets.add(w.id)
        else:
            self.new_wallets[w.id] = w
        self.entries.append(
            {
                "wallet_id": w.id,
                "op": op,
                "ref_id": ref_id,
                "posted_delta": posted_delta,
                "reserved_delta": reserved_delta,
                "posted_after": w.posted,
                "reserved_after": w.reserved,
                "created_at": self.now,
            }
        )

    @staticmethod
    def _replay(existing_fp: str, fp: str, what: str, op_id: str) -> None:
        if existing_fp != fp:
            raise IdempotencyConflict(f"{what} id {op_id} was already used with a different body")

    # operations ------------------------------------------------------------

    def apply(self, op: Operation) -> Result:
        if isinstance(op, CreateLock):
            return self._create_lock(op)
        if isinstance(op, CommitLock):
            return self._commit_lock(op)
        if isinstance(op, ReleaseLock):
            return self._release_lock(op)
        if isinstance(op, MakeTransfer):
            return self._transfer(
                op, TransferKind.TRANSFER, op.debit_wallet_id, op.credit_wallet_id
            )
        if isinstance(op, Issue):
            return self._transfer(
                op, TransferKind.ISSUE, issuance_wallet_id(op.currency), op.wallet_id
            )
        if isinstance(op, Redeem):
            return self._transfer(
                op, TransferKind.REDEEM, op.wallet_id, issuance_wallet_id(op.currency)
            )
        if isinstance(op, OpenWallet):
            return self._open_wallet(op)
        if isinstance(op, SetWalletStatus):
            return self._set_status(op)
        raise InvalidInput(f"unknown operation {type(op).__name__}")

    def _open_wallet(self, op: OpenWallet) -> Wallet:
        fp = op.fingerprint()
        existing = self.wallets.get(op.id)
        if existing is not None:
            if existing.fingerprint != fp:
                raise WalletExists(f"wallet {op.id} exists with different attributes")
            # A replay answers what the original call answered; GET shows the present.
            return replace(existing, status=WalletStatus.OPEN, posted=0, reserved=0)
        w = Wallet(
            id=op.id,
            kind=op.kind,
            owner=op.owner,
            currency=op.currency,
            status=WalletStatus.OPEN,
            posted=0,
            reserved=0,
            created_at=self.now,
            fingerprint=fp,
        )
        self.wallets[w.id] = w
        self.new_wallets[w.id] = w
        return w

    def _set_status(self, op: SetWalletStatus) -> Wallet:
        w = self._wallet(op.id)
        if w.kind is WalletKind.ISSUANCE:
            raise NotAllowed("the issuance wallet's status cannot change")
        if op.status is WalletStatus.CLOSED and (
            w.id in self.awaited
            or any(
                lk.state is LockState.PENDING and lk.credit_wallet_id == w.id
                for lk in self.locks.values()
            )
        ):
            raise NotAllowed(f"wallet {w.id} is the beneficiary of pending locks")
        updated = w.with_status(op.status)
        if updated is not w:
            self._set_wallet(updated, "status:" + op.status.value, w.id, 0, 0)
        return updated

    def _transfer(
        self, op: MakeTransfer | Issue | Redeem, kind: TransferKind, debit_id: str, credit_id: str
    ) -> Transfer:
        fp = op.fingerprint()
        existing = self.transfers.get(op.id)
        if existing is not None:
            self._replay(existing.fingerprint, fp, "transfer", op.id)
            return existing
        if kind is TransferKind.TRANSFER and WalletKind.ISSUANCE in (
            self._wallet(debit_id).kind,
            self._wallet(credit_id).kind,
        ):
            raise NotAllowed("DT enters and leaves the issuance wallet only by issue and redeem")
        if kind is TransferKind.REDEEM and self._wallet(debit_id).kind is WalletKind.ISSUANCE:
            raise NotAllowed("cannot redeem from the issuance wallet")
        if kind is TransferKind.ISSUE and self._wallet(credit_id).kind is WalletKind.ISSUANCE:
            # Debit and credit would be the same row: the credit would overwrite the debit and
            # mint DT out of nothing (double entry and conservation both broken).
            raise NotAllowed("cannot issue into the issuance wallet")
        debit = self._wallet(debit_id).debit(op.amount, op.currency)
        credit = self._wallet(credit_id).credit(op.amount, op.currency)
        if credit.posted > MAX_AMOUNT or -debit.posted > MAX_AMOUNT:
            raise InvalidInput("balance would exceed the largest representable amount")
        t = Transfer(
            id=op.id,
            kind=kind,
            debit_wallet_id=debit_id,
            credit_wallet_id=credit_id,
            amount=op.amount,
            currency=op.currency,
            created_at=self.now,
            reference=op.reference,
            fingerprint=fp,
        )
        self._need(debit_id, Needs.SEND)
        self._need(credit_id, Needs.RECEIVE)
        self._set_wallet(debit, kind.value, op.id, -op.amount, 0)
        self._set_wallet(credit, kind.value, op.id, op.amount, 0)
        self.transfers[t.id] = t
        self.new_transfers.append(t)
        return t

    def _create_lock(self, op: CreateLock) -> Lock:
        fp = op.fingerprint()
        existing = self.locks.get(op.id)
        if existing is not None:
            self._replay(existing.fingerprint, fp, "lock", op.id)
            return replace(existing, state=LockState.PENDING, resolved_at=None, fulfilment=None)
        debit = self._wallet(op.debit_wallet_id)
        credit = self._wallet(op.credit_wallet_id)
        if WalletKind.ISSUANCE in (debit.kind, credit.kind):
            raise NotAllowed("the issuance wallet takes no part in locks")
        credit._check_can_receive(op.currency)
        if op.expires_at is not None and op.expires_at <= self.now:
            raise InvalidInput("expires_at is in the past")
        reserved = debit.reserve(op.amount, op.currency)
        lk = Lock(
            id=op.id,
            debit_wallet_id=debit.id,
            credit_wallet_id=credit.id,
            amount=op.amount,
            currency=op.currency,
            created_at=self.now,
            expires_at=op.expires_at,
            condition=op.condition.lower() if op.condition else None,
            reference=op.reference,
            fingerprint=fp,
        )
        self._need(debit.id, Needs.SEND)
        self._need(credit.id, Needs.RECEIVE)
        self._set_wallet(reserved, "lock", op.id, 0, op.amount)
        self.locks[lk.id] = lk
        self.new_locks.add(lk.id)
        return lk

    def _existing_lock(self, lock_id: str) -> Lock:
        try:
            return self.locks[lock_id]
        except KeyError:
            raise LockNotFound(f"no lock {lock_id}", lock_id=lock_id) from None

    def _store_lock(self, lk: Lock) -> None:
        self.locks[lk.id] = lk
        if lk.id not in self.new_locks:
            self.dirty_locks.add(lk.id)

    def _commit_lock(self, op: CommitLock) -> Lock:
        lk = self._existing_lock(op.id)
        fulfilment = op.fulfilment.lower() if op.fulfilment else None
        if lk.state is LockState.POSTED and (lk.condition is None or lk.fulfilment == fulfilment):
            return lk  # replay of the commit that resolved it
        posted = lk.post(fulfilment, self.now)
        debit = self._wallet(lk.debit_wallet_id)
        credit = self._wallet(lk.credit_wallet_id).credit(lk.amount, lk.currency)
        self._set_wallet(
            debit.settle_reserved(lk.amount), "lock_commit", lk.id, -lk.amount, -lk.amount
        )
        self._need(credit.id, Needs.RECEIVE)
        self._set_wallet(credit, "lock_commit", lk.id, lk.amount, 0)
        self._store_lock(posted)
        return posted

    def _release_lock(self, op: ReleaseLock) -> Lock:
        lk = self._existing_lock(op.id)
        if lk.state is LockState.VOIDED:
            return lk  # replay of the release that resolved it
        voided = lk.void(self.now)
        self._release_reserve(voided, "lock_release")
        return voided

    def _release_reserve(self, lk: Lock, op_name: str) -> None:
        debit = self._wallet(lk.debit_wallet_id)
        self._set_wallet(debit.unreserve(lk.amount), op_name, lk.id, 0, -lk.amount)
        self._store_lock(lk)

    def expire(self, lock_id: str) -> Lock | None:
        lk = self.locks.get(lock_id)
        if lk is None or lk.state is not LockState.PENDING or not lk.is_expired(self.now):
            return None
        expired = lk.expire(self.now)
        self._release_reserve(expired, "lock_expire")
        return expired

    def flush(self, repo: LedgerRepository, *, conditional: bool = False) -> None:
        """Write the batch. ``conditional``: the wallets were read without row locks, and
        the repository's ``move_wallets`` writes their changes as deltas under the batch's
        checks (:mod:`gateway.ledger.moves`), locking them in id order: with the COMMIT, in a
        unit of work's transaction (:class:`gateway.ledger.pgmoves.HeldMoves`)."""
        # A repository may send its writes together (one network round trip on PostgreSQL);
        # ``pipelined`` is optional so that in-memory fakes need not implement it.
        pipelined: Callable[[], AbstractContextManager[None]] | None = getattr(
            repo, "pipelined", None
        )
        with pipelined() if pipelined is not None else nullcontext():
            if conditional:
                assert not self.new_wallets
                repo.move_wallets(self.entries, self.needs)  # type: ignore[attr-defined]
                repo.insert_transfers(self.new_transfers)
                repo.insert_locks([self.locks[i] for i in self.new_locks])
                repo.update_locks([self.locks[i] for i in sorted(self.dirty_locks)])
                return
            repo.insert_wallets(list(self.new_wallets.values()))
            repo.update_wallets([self.wallets[i] for i in sorted(self.dirty_wallets)])
            repo.insert_transfers(self.new_transfers)
            repo.insert_locks([self.locks[i] for i in self.new_locks])
            repo.update_locks([self.locks[i] for i in sorted(self.dirty_locks)])
            repo.insert_entries(self.entries)


def _wallet_ids(op: Operation, locks: dict[str, Lock]) -> tuple[str, ...]:
    if isinstance(op, MakeTransfer | CreateLock):
        return (op.debit_wallet_id, op.credit_wallet_id)
    if isinstance(op, Issue | Redeem):
        return (op.wallet_id, issuance_wallet_id(op.currency))
    if isinstance(op, OpenWallet | SetWalletStatus):
        return (op.id,)
    lk = locks.get(op.id)
    return (lk.debit_wallet_id, lk.credit_wallet_id) if lk else ()


def _conditional(repo: LedgerRepository, ops: Sequence[Operation]) -> bool:
    """Whether the batch reads its wallets without row locks and writes their changes as
    conditional deltas: where the repository can (``conditional_wallet_writes``: PostgreSQL,
    where a row lock is held to the COMMIT and a participant's wallet is in every PvP), and
    the batch neither opens wallets nor changes a status (those read them locked)."""
    return getattr(repo, "conditional_wallet_writes", False) and not any(
        isinstance(op, OpenWallet | SetWalletStatus) for op in ops
    )


def _read(
    repo: LedgerRepository, ops: Sequence[Operation], *, lock_wallets: bool = True
) -> tuple[dict[str, Lock], dict[str, Transfer], dict[str, Wallet]]:
    """Row-lock and load what ``ops`` touch: locks by id, then wallets by id (the global
    order; not locked without ``lock_wallets``), and the transfers they name. A repository
    may read it all at once (``read_for_batch``: one round trip on PostgreSQL);
    ``read_for_batch`` is optional so that in-memory fakes need not implement it, and the
    plain reads below are its oracle."""
    lock_ids = {op.id for op in ops if isinstance(op, CreateLock | CommitLock | ReleaseLock)}
    transfer_ids = {op.id for op in ops if isinstance(op, MakeTransfer | Issue | Redeem)}
    resolving = {op.id for op in ops if isinstance(op, CommitLock | ReleaseLock)}
    read_for_batch: Callable[..., Any] | None = getattr(repo, "read_for_batch", None)
    if read_for_batch is not None:
        named = {w for op in ops for w in _wallet_ids(op, {})}
        found: tuple[dict[str, Lock], dict[str, Transfer], dict[str, Wallet]]
        found = read_for_batch(lock_ids, transfer_ids, named, resolving, lock_wallets=lock_wallets)
        return found
    locks = repo.locks_for_update(lock_ids)
    transfers = repo.transfers(transfer_ids)
    wallet_ids = {w for op in ops for w in _wallet_ids(op, locks)}
    return locks, transfers, repo.wallets_for_update(wallet_ids)


def execute(uow: UnitOfWork, ops: Sequence[Operation], now: datetime | None = None) -> list[Result]:
    """Apply ``ops`` inside the caller's open unit of work, without committing.

    Raises the first operation's error with ``extra["operation_index"]`` set; the caller's
    transaction must then be rolled back (leaving the ``with uow`` block does it).
    """
    now = now or utcnow()
    for i, op in enumerate(ops):
        _validate(op, i if len(ops) > 1 else None)
    repo = uow.ledger
    conditional = _conditional(repo, ops)
    locks, transfers, wallets = _read(repo, ops, lock_wallets=not conditional)
    batch = _Batch(wallets, locks, transfers, now)
    batch.awaited = {
        op.id
        for op in ops
        if isinstance(op, SetWalletStatus)
        and op.status is WalletStatus.CLOSED
        and repo.has_pending_locks_to(op.id)
    }
    results: list[Result] = []
    for i, op in enumerate(ops):
        try:
            results.append(batch.apply(op))
        except GatewayError as exc:
            if len(ops) > 1:
                exc.extra.setdefault("operation_index", i)
            raise
    batch.flush(repo, conditional=conditional)
    return results


def _validate(op: Operation, index: int | None) -> None:
    try:
        op.validate()
    except GatewayError as exc:
        if index is not None:
            exc.extra.setdefault("operation_index", index)
        raise


def apply(uow: UnitOfWork, ops: Sequence[Operation], now: datetime | None = None) -> list[Result]:
    """Apply a batch in its own transaction (all or nothing), retrying transient conflicts."""
    if not ops:
        raise InvalidInput("a batch needs at least one operation")
    return retrying(uow, lambda: execute(uow, ops, now))


def apply_one(uow: UnitOfWork, op: Operation, now: datetime | None = None) -> Result:
    return apply(uow, [op], now)[0]


# ------------------------------------------------------------------ queries


def get_wallet(uow: UnitOfWork, wallet_id: str) -> Wallet:
    with uow:
        w = uow.ledger.wallet(wallet_id)
    if w is None:
        raise WalletNotFound(f"no wallet {wallet_id}", wallet_id=wallet_id)
    return w


def get_lock(uow: UnitOfWork, lock_id: str) -> Lock:
    with uow:
        lk = uow.ledger.lock(lock_id)
    if lk is None:
        raise LockNotFound(f"no lock {lock_id}", lock_id=lock_id)
    return lk


def get_transfer(uow: UnitOfWork, transfer_id: str) -> Transfer:
    with uow:
        t = uow.ledger.transfer(transfer_id)
    if t is None:
        raise TransferNotFound(f"no transfer {transfer_id}", transfer_id=transfer_id)
    return t


def history(uow: UnitOfWork, wallet_id: str, cursor: int | None, limit: int) -> HistoryPage:
    """Entries of one wallet in the order they happened, ``limit`` at a time.

    ``next_cursor`` is the seq of the last entry returned, or None at the end.
    """
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    if cursor is not None and cursor < 0:
        raise InvalidInput("cursor must not be negative")
    with uow:
        if uow.ledger.wallet(wallet_id) is None:
            raise WalletNotFound(f"no wallet {wallet_id}", wallet_id=wallet_id)
        rows = uow.ledger.history(wallet_id, cursor or 0, limit + 1)
    page = tuple(rows[:limit])
    return HistoryPage(entries=page, next_cursor=page[-1].seq if len(rows) > limit else None)


# ------------------------------------------------------------------ scheduled work


def expire_locks(uow: UnitOfWork, now: datetime | None = None, limit: int = 500) -> list[Lock]:
    """Move pending locks past their expiry to EXPIRED and free their reservation."""
    now = now or utcnow()

    def work() -> list[Lock]:
        ids = uow.ledger.expired_lock_ids(now, limit)
        if not ids:
            return []
        locks = uow.ledger.locks_for_update(ids)
        wallets = uow.ledger.wallets_for_update({lk.debit_wallet_id for lk in locks.values()})
        batch = _Batch(wallets, locks, {}, now)
        expired = [e for i in sorted(locks) if (e := batch.expire(i)) is not None]
        batch.flush(uow.ledger)
        return expired

    return retrying(uow, work)


def check_invariants(uow: UnitOfWork) -> InvariantReport:
    """Recompute the ledger's invariants from its rows; a violation means a bug, not bad input."""
    violations: list[str] = []
    with uow:
        wallets = uow.ledger.all_wallets()
        reserved = uow.ledger.pending_reserved_by_wallet()
        totals = uow.ledger.transfer_totals()
        entry_totals = uow.ledger.entry_totals_by_wallet()
    total_posted = sum(w.posted for w in wallets)
    issued_minus_redeemed = totals.get(TransferKind.ISSUE, 0) - totals.get(TransferKind.REDEEM, 0)
    if total_posted != 0:
        violations.append(f"posted balances sum to {total_posted}, not 0 (double entry)")
    circulating = sum(w.posted for w in wallets if w.kind is not WalletKind.ISSUANCE)
    if circulating != issued_minus_redeemed:
        violations.append(
            f"circulating {circulating} != issued - redeemed {issued_minus_redeemed} (conservation)"
        )
    for w in wallets:
        if w.kind is not WalletKind.ISSUANCE and w.available < 0:
            violations.append(f"wallet {w.id} available {w.available} < 0")
        if w.reserved != reserved.get(w.id, 0):
            violations.append(
                f"wallet {w.id} reserved {w.reserved} != pending locks {reserved.get(w.id, 0)}"
            )
        p, r = entry_totals.get(w.id, (0, 0))
        if (p, r) != (w.posted, w.reserved):
            violations.append(f"wallet {w.id} balances differ from the sum of its history")
    return InvariantReport(
        total_posted=total_posted,
        issued_minus_redeemed=issued_minus_redeemed,
        violations=tuple(violations),
    )


__all__ = [
    "LedgerRepository",
    "UnitOfWork",
    "apply",
    "apply_one",
    "check_invariants",
    "execute",
    "expire_locks",
    "get_lock",
    "get_transfer",
    "get_wallet",
    "history",
]
