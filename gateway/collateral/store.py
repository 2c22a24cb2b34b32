"""Collateral log tables and the SQL repository. Tables never leave this module.

- ``collateral_pending``: the pool. Entries wait here until the integrator sequences them. The
  ledger's trigger ``collateral_capture`` (migration 0008) adds a row for every posted movement
  of a segregated wallet in the ledger's own transaction (``kind='dt'``, ``ledger_seq`` set, the
  entry is encoded at integration from that ledger entry); the chain watcher adds its entries
  already encoded (``body``).
- ``collateral_entry``: the sequenced entries, ``idx`` from 0 without gaps, per log (a log is
  named by its segregated wallet).
- ``collateral_hash``: every complete subtree hash (level, index) of the Merkle tree: level 0 are
  the leaf hashes; the rows at levels 8·L are the hash tiles of level L.
- ``collateral_checkpoint``: the newest signed checkpoint of each tree size.
- ``collateral_cosignature``: the newest cosignature each witness returned, with the checkpoint
  text it covers (cosignature/v1 signs the whole text, timestamp line included).
- ``collateral_cosigned_checkpoint``: the checkpoint last put to the witnesses, as served: the
  log's note with every cosignature gathered for that very text appended.

Pool rows of one log are numbered in the order their transactions took the segregated wallet's
row lock (every writer of a log's pool takes it first), so sequencing them by id never puts a
movement before one it followed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from gateway.db import SqlUnitOfWork, autoincrement_field, big_int_field, utc_field
from gateway.ledger.store import SqlLedgerRepository


class PendingRow(SQLModel, table=True):
    __tablename__ = "collateral_pending"
    __table_args__ = (sa.Index("ix_collateral_pending_wallet", "wallet_id", "id"),)
    id: int | None = autoincrement_field()
    wallet_id: str = Field(max_length=128)
    kind: str = Field(max_length=16)
    ledger_seq: int | None = big_int_field(nullable=True)
    body: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    transfer_id: str | None = Field(default=None, max_length=128)
    tx_hash: str | None = Field(default=None, max_length=66)
    log_index: int | None = None
    created_at: datetime = utc_field()


class EntryRow(SQLModel, table=True):
    __tablename__ = "collateral_entry"
    __table_args__ = (
        sa.Index("ix_collateral_entry_transfer", "wallet_id", "transfer_id"),
        sa.Index("ix_collateral_entry_tx", "wallet_id", "tx_hash"),
        sa.Index("ix_collateral_entry_kind", "wallet_id", "kind", "idx"),
    )
    wallet_id: str = Field(primary_key=True, max_length=128)
    idx: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    kind: str = Field(max_length=16)
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    transfer_id: str | None = Field(default=None, max_length=128)
    tx_hash: str | None = Field(default=None, max_length=66)
    log_index: int | None = None
    created_at: datetime = utc_field()


class HashRow(SQLModel, table=True):
    __tablename__ = "collateral_hash"
    wallet_id: str = Field(primary_key=True, max_length=128)
    level: int = Field(sa_column=sa.Column(sa.SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "collateral_checkpoint"
    wallet_id: str = Field(primary_key=True, max_length=128)
    size: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    note: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    signed_at: datetime = utc_field()


class CosignatureRow(SQLModel, table=True):
    __tablename__ = "collateral_cosignature"
    wallet_id: str = Field(primary_key=True, max_length=128)
    witness: str = Field(primary_key=True, max_length=300)
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    root: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    line: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    timestamp: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    received_at: datetime = utc_field()


class CosignedCheckpointRow(SQLModel, table=True):
    __tablename__ = "collateral_cosigned_checkpoint"
    wallet_id: str = Field(primary_key=True, max_length=128)
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    root: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    note: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    cosigners: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    signed_at: datetime = utc_field()
    witnessed_at: datetime = utc_field()


@dataclass(frozen=True, slots=True)
class Pending:
    """A pool row, with the ledger entry it stands for when it is a DT movement."""

    id: int
    kind: str
    body: str | None
    transfer_id: str | None
    tx_hash: str | None
    log_index: int | None
    created_at: datetime
    op: str | None = None
    amount: int | None = None
    balance: int | None = None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    idx: int
    kind: str
    body: bytes
    transfer_id: str | None
    tx_hash: str | None
    log_index: int | None = None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_at: datetime


@dataclass(frozen=True, slots=True)
class StoredCosignature:
    """A witness's cosignature ``line`` on the checkpoint text ``body`` (of ``size``,
    ``root``), made at the witness's ``timestamp`` (POSIX seconds)."""

    witness: str
    size: int
    root: bytes
    body: str
    line: str
    timestamp: int
    received_at: datetime


_pending_t = PendingRow.__table__  # type: ignore[attr-defined]
_entry_t = EntryRow.__table__  # type: ignore[attr-defined]
_hash_t = HashRow.__table__  # type: ignore[attr-defined]
_checkpoint_t = CheckpointRow.__table__  # type: ignore[attr-defined]
_cosignature_t = CosignatureRow.__table__  # type: ignore[attr-defined]
_cosigned_t = CosignedCheckpointRow.__table__  # type: ignore[attr-defined]

_SELECT_PENDING = sa.text(
    "SELECT p.id, p.kind, p.body, p.transfer_id, p.tx_hash, p.log_index, p.created_at,"
    " e.op, e.ref_id, e.posted_delta, e.posted_after"
    " FROM collateral_pending p LEFT JOIN ledger_entry e ON e.seq = p.ledger_seq"
    " WHERE p.wallet_id = :w ORDER BY p.id LIMIT :n"
).columns(created_at=PendingRow.__table__.c.created_at.type)  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=256)
def _hash_lookup(n: int) -> sa.TextClause:
    return sa.text(
        " UNION ALL ".join(
            f"SELECT level, idx, hash FROM collateral_hash"
            f" WHERE wallet_id = :w AND level = :l{k} AND idx = :i{k}"
            for k in range(n)
        )
    )


class CollateralRepository:
    """SQL access for one transaction. ``wallet_id`` names the log everywhere."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # ---------------------------------------------------------------- the pool

    def add_pending_many(self, rows: Sequence[dict[str, object]]) -> None:
        """Pool already-encoded entries in one statement (``wallet_id``, ``kind``, ``body``,
        ``created_at``, optionally ``transfer_id``, ``tx_hash``, ``log_index``)."""
        if rows:
            self.conn.execute(sa.insert(_pending_t), list(rows))

    def add_pending(
        self,
        wallet_id: str,
        kind: str,
        body: bytes,
        now: datetime,
        *,
        transfer_id: str | None = None,
        tx_hash: str | None = None,
        log_index: int | None = None,
    ) -> None:
        self.conn.execute(
            sa.insert(_pending_t).values(
                wallet_id=wallet_id,
                kind=kind,
                body=body.decode("ascii"),
                transfer_id=transfer_id,
                tx_hash=tx_hash,
                log_index=log_index,
                created_at=now,
            )
        )

    def pending(self, wallet_id: str, limit: int) -> list[Pending]:
        rows = self.conn.execute(_SELECT_PENDING, {"w": wallet_id, "n": limit}).all()
        out = []
        for r in rows:
            if r.body is None:  # a DT movement: the ledger entry the trigger pooled
                out.append(
                    Pending(
                        id=r.id,
                        kind=r.kind,
                        body=None,
                        transfer_id=r.ref_id,
                        tx_hash=None,
                        log_index=None,
                        created_at=r.created_at,
                        op=r.op,
                        amount=r.posted_delta,
                        balance=r.posted_after,
                    )
                )
            else:
                out.append(
                    Pending(
                        r.id, r.kind, r.body, r.transfer_id, r.tx_hash, r.log_index, r.created_at
                    )
                )
        return out

    def delete_pending(self, wallet_id: str, ids: Sequence[int]) -> int:
        """Delete the pool rows just sequenced; the count tells whether another integrator
        took any of them meanwhile (then this transaction must roll back)."""
        res = self.conn.execute(
            sa.delete(_pending_t).where(
                _pending_t.c.wallet_id == wallet_id, _pending_t.c.id.in_(ids)
            )
        )
        return int(res.rowcount)

    def pending_count(self, wallet_id: str) -> int:
        return int(
            self.conn.execute(
                sa.select(sa.func.count())
                .select_from(_pending_t)
                .where(_pending_t.c.wallet_id == wallet_id)
            ).scalar_one()
        )

    # ---------------------------------------------------------------- the tree

    def size(self, wallet_id: str) -> int:
        n = self.conn.execute(
            sa.select(sa.func.max(_entry_t.c.idx)).where(_entry_t.c.wallet_id == wallet_id)
        ).scalar_one()
        return 0 if n is None else int(n) + 1

    def insert_entries(self, wallet_id: str, entries: Sequence[StoredEntry], now: datetime) -> None:
        if entries:
            self.conn.execute(
                sa.insert(_entry_t),
                [
                    {
                        "wallet_id": wallet_id,
                        "idx": e.idx,
                        "kind": e.kind,
                        "body": e.body.decode("ascii"),
                        "transfer_id": e.transfer_id,
                        "tx_hash": e.tx_hash,
                        "log_index": e.log_index,
                        "created_at": now,
                    }
                    for e in entries
                ],
            )

    def insert_hashes(self, wallet_id: str, hashes: Iterable[tuple[int, int, bytes]]) -> None:
        rows = [{"wallet_id": wallet_id, "level": lv, "idx": i, "hash": h} for lv, i, h in hashes]
        if rows:
            self.conn.execute(sa.insert(_hash_t), rows)

    def hashes(self, wallet_id: str, wanted: Sequence[tuple[int, int]]) -> list[bytes]:
        """The stored hashes ``wanted``, in its order; KeyError names one that is missing.
        One statement of primary-key lookups (a proof needs a few dozen)."""
        if not wanted:
            return []
        params: dict[str, object] = {"w": wallet_id}
        for k, (level, idx) in enumerate(wanted):
            params[f"l{k}"], params[f"i{k}"] = level, idx
        found = {
            (int(lv), int(i)): bytes(h)
            for lv, i, h in self.conn.execute(_hash_lookup(len(wanted)), params)
        }
        return [found[k] for k in wanted]

    def hash_range(self, wallet_id: str, level: int, start: int, count: int) -> list[bytes]:
        rows = self.conn.execute(
            sa.select(_hash_t.c.hash)
            .where(
                _hash_t.c.wallet_id == wallet_id,
                _hash_t.c.level == level,
                _hash_t.c.idx >= start,
                _hash_t.c.idx < start + count,
            )
            .order_by(_hash_t.c.idx)
        ).all()
        return [bytes(r[0]) for r in rows]

    # ---------------------------------------------------------------- entries

    def entry_range(self, wallet_id: str, start: int, count: int) -> list[bytes]:
        rows = self.conn.execute(
            sa.select(_entry_t.c.body)
            .where(
                _entry_t.c.wallet_id == wallet_id,
                _entry_t.c.idx >= start,
                _entry_t.c.idx < start + count,
            )
            .order_by(_entry_t.c.idx)
        ).all()
        return [r[0].encode("ascii") for r in rows]

    def _entries_where(self, wallet_id: str, *conds: sa.ColumnElement[bool]) -> list[StoredEntry]:
        rows = self.conn.execute(
            sa.select(
                _entry_t.c.idx,
                _entry_t.c.kind,
                _entry_t.c.body,
                _entry_t.c.transfer_id,
                _entry_t.c.tx_hash,
                _entry_t.c.log_index,
            )
            .where(_entry_t.c.wallet_id == wallet_id, *conds)
            .order_by(_entry_t.c.idx)
            .limit(100)
        ).all()
        return [
            StoredEntry(
                r.idx, r.kind, r.body.encode("ascii"), r.transfer_id, r.tx_hash, r.log_index
            )
            for r in rows
        ]

    def entry(self, wallet_id: str, idx: int) -> StoredEntry | None:
        found = self._entries_where(wallet_id, _entry_t.c.idx == idx)
        return found[0] if found else None

    def entries_by_transfer(self, wallet_id: str, transfer_id: str) -> list[StoredEntry]:
        return self._entries_where(wallet_id, _entry_t.c.transfer_id == transfer_id)

    def entries_by_tx(self, wallet_id: str, tx_hash: str) -> list[StoredEntry]:
        return self._entries_where(wallet_id, _entry_t.c.tx_hash == tx_hash)

    def last_entry_of_kind(self, wallet_id: str, kinds: Sequence[str]) -> StoredEntry | None:
        row = self.conn.execute(
            sa.select(_entry_t.c.idx)
            .where(_entry_t.c.wallet_id == wallet_id, _entry_t.c.kind.in_(kinds))
            .order_by(_entry_t.c.idx.desc())
            .limit(1)
        ).first()
        return None if row is None else self.entry(wallet_id, int(row[0]))

    def newest_of_kinds(
        self, wallet_id: str, kinds: Sequence[str], below: int, limit: int
    ) -> list[StoredEntry]:
        """The newest entries of these kinds with an index below ``below``, newest first."""
        rows = self.conn.execute(
            sa.select(
                _entry_t.c.idx,
                _entry_t.c.kind,
                _entry_t.c.body,
                _entry_t.c.transfer_id,
                _entry_t.c.tx_hash,
                _entry_t.c.log_index,
            )
            .where(
                _entry_t.c.wallet_id == wallet_id,
                _entry_t.c.kind.in_(kinds),
                _entry_t.c.idx < below,
            )
            .order_by(_entry_t.c.idx.desc())
            .limit(limit)
        ).all()
        return [
            StoredEntry(
                r.idx, r.kind, r.body.encode("ascii"), r.transfer_id, r.tx_hash, r.log_index
            )
            for r in rows
        ]

    def chain_txs_of_transfers(
        self, wallet_id: str, transfer_ids: Sequence[str], below: int
    ) -> dict[str, str]:
        """transfer id -> the chain transaction of the mint or redemption that names it."""
        if not transfer_ids:
            return {}
        rows = self.conn.execute(
            sa.select(_entry_t.c.transfer_id, _entry_t.c.tx_hash).where(
                _entry_t.c.wallet_id == wallet_id,
                _entry_t.c.transfer_id.in_(sorted(set(transfer_ids))),
                _entry_t.c.kind.in_(("mint", "burn")),
                _entry_t.c.idx < below,
            )
        ).all()
        return {str(r.transfer_id): str(r.tx_hash) for r in rows if r.tx_hash is not None}

    def last_pending_of_kind(self, wallet_id: str, kinds: Sequence[str]) -> str | None:
        """The body of the newest pool row of these kinds (already encoded), if any."""
        row = self.conn.execute(
            sa.select(_pending_t.c.body)
            .where(_pending_t.c.wallet_id == wallet_id, _pending_t.c.kind.in_(kinds))
            .order_by(_pending_t.c.id.desc())
            .limit(1)
        ).first()
        return None if row is None else str(row[0])

    def has_chain_entry(self, wallet_id: str, kind: str, tx_hash: str, log_index: int) -> bool:
        """Whether a chain event is in the log or the pool already: a rescan after a rewind
        must not add it twice."""
        for t in (_entry_t, _pending_t):
            found = self.conn.execute(
                sa.select(sa.literal(1)).where(
                    t.c.wallet_id == wallet_id,
                    t.c.tx_hash == tx_hash,
                    t.c.log_index == log_index,
                    t.c.kind == kind,
                )
            ).first()
            if found is not None:
                return True
        return False

    def _replace(self, table: sa.Table, key: dict[str, object], values: dict[str, object]) -> None:
        """The row of ``key`` becomes ``values`` (inserted, or replacing the one there)."""
        self.conn.execute(
            sa.delete(table).where(*(table.c[name] == value for name, value in key.items()))
        )
        self.conn.execute(sa.insert(table).values(**key, **values))

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, wallet_id: str, cp: StoredCheckpoint) -> None:
        self._replace(
            _checkpoint_t,
            {"wallet_id": wallet_id, "size": cp.size},
            {"root": cp.root, "note": cp.note, "signed_at": cp.signed_at},
        )

    def latest_checkpoint(self, wallet_id: str) -> StoredCheckpoint | None:
        row = self.conn.execute(
            sa.select(
                _checkpoint_t.c.size,
                _checkpoint_t.c.root,
                _checkpoint_t.c.note,
                _checkpoint_t.c.signed_at,
            )
            .where(_checkpoint_t.c.wallet_id == wallet_id)
            .order_by(_checkpoint_t.c.size.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        return StoredCheckpoint(int(row.size), bytes(row.root), row.note, row.signed_at)

    # ---------------------------------------------------------------- cosignatures

    def cosignatures(self, wallet_id: str) -> dict[str, StoredCosignature]:
        """The newest cosignature of each witness, by witness."""
        rows = self.conn.execute(
            sa.select(
                _cosignature_t.c.witness,
                _cosignature_t.c.size,
                _cosignature_t.c.root,
                _cosignature_t.c.body,
                _cosignature_t.c.line,
                _cosignature_t.c.timestamp,
                _cosignature_t.c.received_at,
            ).where(_cosignature_t.c.wallet_id == wallet_id)
        ).all()
        return {
            r.witness: StoredCosignature(
                r.witness,
                int(r.size),
                bytes(r.root),
                r.body,
                r.line,
                int(r.timestamp),
                r.received_at,
            )
            for r in rows
        }

    def save_cosignature(self, wallet_id: str, c: StoredCosignature) -> None:
        """Keeps ``c`` as the witness's newest cosignature (replacing the one before)."""
        self._replace(
            _cosignature_t,
            {"wallet_id": wallet_id, "witness": c.witness},
            {
                "size": c.size,
                "root": c.root,
                "body": c.body,
                "line": c.line,
                "timestamp": c.timestamp,
                "received_at": c.received_at,
            },
        )

    def cosigned_checkpoint(self, wallet_id: str) -> StoredCheckpoint | None:
        """The checkpoint last put to the witnesses, with their cosignatures in its note."""
        row = self.conn.execute(
            sa.select(
                _cosigned_t.c.size,
                _cosigned_t.c.root,
                _cosigned_t.c.note,
                _cosigned_t.c.signed_at,
            ).where(_cosigned_t.c.wallet_id == wallet_id)
        ).first()
        if row is None:
            return None
        return StoredCheckpoint(int(row.size), bytes(row.root), row.note, row.signed_at)

    def save_cosigned_checkpoint(
        self, wallet_id: str, cp: StoredCheckpoint, cosigners: int, now: datetime
    ) -> bool:
        """Serve ``cp`` (its note carrying ``cosigners`` cosignatures) from now on, unless a
        newer checkpoint is served already (two submitters, one late): the served checkpoint
        never goes back. Returns whether it was stored."""
        current = self.conn.execute(
            sa.select(_cosigned_t.c.size, _cosigned_t.c.signed_at)
            .where(_cosigned_t.c.wallet_id == wallet_id)
            .with_for_update()
        ).first()
        if current is not None and (int(current.size), current.signed_at) > (
            cp.size,
            cp.signed_at,
        ):
            return False
        self._replace(
            _cosigned_t,
            {"wallet_id": wallet_id},
            {
                "size": cp.size,
                "root": cp.root,
                "note": cp.note,
                "cosigners": cosigners,
                "signed_at": cp.signed_at,
                "witnessed_at": now,
            },
        )
        return True


class CollateralUnitOfWork(SqlUnitOfWork):
    """A transaction over the collateral log (and the ledger, for the segregated wallet's lock)."""

    collateral: CollateralRepository
    ledger: SqlLedgerRepository

    def _bind(self, conn: Connection) -> None:
        self.collateral = CollateralRepository(conn)
        self.ledger = SqlLedgerRepository(conn)


__all__ = [
    "CheckpointRow",
    "CollateralRepository",
    "CollateralUnitOfWork",
    "CosignatureRow",
    "CosignedCheckpointRow",
    "EntryRow",
    "HashRow",
    "Pending",
    "PendingRow",
    "StoredCheckpoint",
    "StoredCosignature",
    "StoredEntry",
]
