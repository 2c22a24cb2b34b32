"""A batch's reads in one go (``read_for_batch``: one round trip on PostgreSQL) return what the
plain reads one after the other return: the same locks, transfers and wallets."""

from __future__ import annotations

import hashlib

from sqlalchemy.engine import Engine

from gateway.ledger import service
from gateway.ledger.model import (
    CreateLock,
    Issue,
    MakeTransfer,
    OpenWallet,
    WalletKind,
)
from gateway.ledger.store import LedgerUnitOfWork


def _condition(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def test_batch_reads_match_the_plain_reads(engine: Engine) -> None:
    wallets = ["a", "b", "c", "d", "e"]
    service.apply(
        LedgerUnitOfWork(engine),
        [OpenWallet(w, WalletKind.PARTICIPANT, w) for w in wallets]
        + [Issue(f"fund-{w}", w, 1_000) for w in wallets]
        + [
            CreateLock("lk-1", "a", "b", 10, condition=_condition(b"1")),
            CreateLock("lk-2", "c", "d", 20),
            MakeTransfer("t-1", "e", "a", 5),
        ]
        + [CreateLock(f"many-{i:02}", wallets[i % 5], wallets[(i + 1) % 5], 1) for i in range(20)],
    )
    many = {f"many-{i:02}" for i in range(20)}
    cases = [
        # (lock ids, transfer ids, wallets named, locks whose wallets are read too)
        ({"lk-1", "lk-2", "lk-new"}, {"t-1", "t-new"}, {"e"}, {"lk-1", "lk-2", "lk-new"}),
        ({"lk-2"}, set(), set(), {"lk-2"}),
        (set(), {"t-1"}, {"a", "e", "nobody"}, set()),
        ({"lk-1"}, set(), {"c"}, set()),
        (set(), set(), set(), set()),
        # More ids than are sent one by one (``pgarrays.FEW``): as one array each.
        (
            {f"many-{i:02}" for i in range(12)},
            {"t-1"},
            set(wallets) | {f"nobody-{i}" for i in range(6)},
            {f"many-{i:02}" for i in range(0, 12, 2)},
        ),
        ({"lk-1", "lk-2", "many-00"}, set(), {"b"}, {"lk-2"}),
        # More locks than PostgreSQL reads together with their wallets.
        (many | {"lk-1"}, set(), {"e"}, many | {"lk-1"}),
    ]
    uow = LedgerUnitOfWork(engine)
    for lock_ids, transfer_ids, named, of_locks in cases:
        with uow:
            got = uow.ledger.read_for_batch(lock_ids, transfer_ids, named, of_locks)
        with uow:
            locks = uow.ledger.locks_for_update(lock_ids)
            transfers = uow.ledger.transfers(transfer_ids)
            ids = set(named)
            for lock_id in of_locks:
                if lock_id in locks:
                    ids |= {locks[lock_id].debit_wallet_id, locks[lock_id].credit_wallet_id}
            expected = (locks, transfers, uow.ledger.wallets_for_update(ids))
        assert got == expected
        assert list(got[2]) == sorted(got[2])  # wallets in id order, as they were locked
        # Wallets not row-locked (a batch that writes them as conditional deltas): the same.
        with uow:
            unlocked = uow.ledger.read_for_batch(
                lock_ids, transfer_ids, named, of_locks, lock_wallets=False
            )
        assert unlocked == expected
        assert list(unlocked[2]) == sorted(unlocked[2])
    # A batch that only resolves locks reads them with their wallets in one statement.
    resolving = {"lk-1", "lk-2", "lk-gone"}
    with uow:
        got = uow.ledger.read_for_batch(resolving, set(), set(), resolving, lock_wallets=False)
    with uow:
        locks = uow.ledger.locks_for_update(resolving)
        ids = {w for lk in locks.values() for w in (lk.debit_wallet_id, lk.credit_wallet_id)}
        assert got == (locks, {}, uow.ledger.wallets_by_id(ids))
