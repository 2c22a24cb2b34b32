"""Collateral log use cases: pool chain entries, integrate the pool into the Merkle tree and sign
checkpoints, and answer the public's questions (tiles, entries with proofs, consistency).

The log's life, in short (docs/collateral.md has it in full):

1. *Pooling.* A DT movement of the segregated wallet enters the pool in the ledger's own
   transaction (the database trigger of migration 0008); the chain watcher pools its chain
   entries and reserve statements (:func:`pool_chain_entries`) after taking the segregated
   wallet's row lock, so that pool order is the order in which movements happened.
2. *Integration* (:func:`integrate`, a job under a database lease, a few times a second): takes
   the pool in id order, encodes each entry canonically, appends it to the tree, stores the
   entries and every completed subtree hash, deletes the pooled rows and signs a checkpoint, all
   in one transaction. Two integrators at once cannot both succeed: the second collides on the
   entries' primary key (or finds its pool rows gone) and rolls back.
3. *Serving*: checkpoints and tiles are read from the tables; proofs are computed from the stored
   subtree hashes (a few dozen, one query), never by rebuilding the tree.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy.exc

from gateway.collateral import entries as fmt
from gateway.collateral import tlog, witnessing
from gateway.collateral.note import Checkpoint, sign_note
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import (
    CollateralRepository,
    CollateralUnitOfWork,
    Pending,
    StoredCheckpoint,
    StoredEntry,
)
from gateway.db import utcnow
from gateway.errors import InvalidInput, NotFound, TransientError, Unavailable
from gateway.faults import crash_point
from gateway.ledger.store import SqlLedgerRepository

log = logging.getLogger(__name__)

UowFactory = Callable[..., CollateralUnitOfWork]
"""``uow()`` for a write transaction, ``uow(readonly=True)`` for reads."""


class EntryNotFound(NotFound):
    code = "ENTRY_NOT_FOUND"


class TileNotFound(NotFound):
    code = "TILE_NOT_FOUND"


class LogNotReady(Unavailable):
    """The log has no checkpoint yet (the integrator has not run once)."""

    code = "LOG_NOT_READY"


def rfc3339(at: datetime) -> str:
    """UTC with milliseconds and ``Z``: the only time format entries use."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


# ------------------------------------------------------------------ pooling (chain side)


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """A chain entry to pool: its encoded body and the references it is looked up by."""

    kind: str
    body: bytes
    transfer_id: str | None = None
    tx_hash: str | None = None
    log_index: int | None = None


class Pooling(Protocol):
    """A unit of work of any capability that pools collateral entries in its transaction."""

    @property
    def collateral(self) -> CollateralRepository: ...
    @property
    def ledger(self) -> SqlLedgerRepository: ...


def pool_chain_entries(
    uow: Pooling, clog: CollateralLog, items: Sequence[ChainEntry], now: datetime
) -> int:
    """Pool chain entries inside the caller's transaction, in the order given (chain order).

    Takes the segregated wallet's row lock first (see the module docstring); an event already
    in the log or the pool (a rescan after a rewind) is skipped. Returns how many were pooled.
    """
    if not items:
        return 0
    uow.ledger.wallets_for_update([clog.wallet_id])
    pooled = 0
    for it in items:
        if (
            it.tx_hash is not None
            and it.log_index is not None
            and uow.collateral.has_chain_entry(clog.wallet_id, it.kind, it.tx_hash, it.log_index)
        ):
            continue
        uow.collateral.add_pending(
            clog.wallet_id,
            it.kind,
            it.body,
            now,
            transfer_id=it.transfer_id,
            tx_hash=it.tx_hash,
            log_index=it.log_index,
        )
        pooled += 1
    return pooled


def statement_due(clog: CollateralLog, had_events: bool) -> bool:
    """A reserve statement follows every pass with chain events, and comes at least every
    ``statement_seconds`` otherwise."""
    return had_events or time.monotonic() - clog.last_statement >= clog.settings.statement_seconds


def statement_entry(
    block: int, block_hash: str, supply: int, reserve: int, now: datetime
) -> ChainEntry:
    body = fmt.encode(
        fmt.Statement(
            block=block,
            block_hash=block_hash.lower(),
            supply=supply,
            reserve=reserve,
            time=rfc3339(now),
        )
    )
    return ChainEntry("statement", body)


# ------------------------------------------------------------------ integration


def _encode_pending(p: Pending) -> bytes:
    """A pooled chain entry is stored encoded; a DT movement is encoded from its ledger entry."""
    if p.body is not None:
        return p.body.encode("ascii")
    assert p.op is not None and p.amount is not None and p.balance is not None
    assert p.transfer_id is not None
    return fmt.encode(
        fmt.DtMovement(
            transfer_id=p.transfer_id,
            op=p.op,
            amount=p.amount,
            balance=p.balance,
            time=rfc3339(p.created_at),
        )
    )


def load_frontier(uow: CollateralUnitOfWork, wallet_id: str, size: int) -> tlog.Frontier:
    wanted = tlog.Frontier.levels(size)
    return tlog.Frontier(size, uow.collateral.hashes(wallet_id, wanted))


def _checkpoint_note(clog: CollateralLog, size: int, root: bytes, now: datetime) -> str:
    body = Checkpoint(
        origin=clog.origin,
        size=size,
        root=root,
        extensions=(f"timestamp {int(now.timestamp())}",),
    ).body()
    return sign_note(body, [clog.signer])


@dataclass(frozen=True, slots=True)
class Integrated:
    size: int
    added: int
    signed: bool
    root: bytes = tlog.EMPTY_ROOT
    """The root of the tree of ``size`` entries (a signed checkpoint's)."""
    balance: int | None = None
    """With ``balance=True``: the segregated wallet's balance the log shows at ``size`` (the
    last ``dt`` entry's before it); None if another integrator's entries hid it."""


def integrate(
    uow_factory: UowFactory,
    clog: CollateralLog,
    now: datetime | None = None,
    *,
    balance: bool = False,
) -> Integrated:
    """Sequence what the pool holds into the tree and sign a checkpoint (module docstring)."""
    with clog.lock:
        try:
            return _integrate(uow_factory, clog, now or utcnow(), balance)
        except (sqlalchemy.exc.IntegrityError, TransientError, _PoolTaken) as exc:
            # Another integrator got there first (a lease that changed hands mid-run): nothing
            # of this attempt was committed; the next run starts from what it stored.
            clog.frontier = None
            log.info("collateral integration yielded to another integrator: %s", exc)
            return Integrated(size=-1, added=0, signed=False)


class _PoolTaken(Exception):
    pass


def _balance_at(repo: CollateralRepository, wallet_id: str, size: int) -> int | None:
    """The balance of the last ``dt`` entry in the tree of ``size`` (0 if none); None when the
    newest ``dt`` entry is beyond it (another integrator committed since ``size`` was read)."""
    last = repo.last_entry_of_kind(wallet_id, ["dt"])
    if last is None:
        return 0
    return _dt_balance(last.body) if last.idx < size else None


def _dt_balance(body: bytes) -> int:
    movement = fmt.decode(body)
    assert isinstance(movement, fmt.DtMovement)
    return movement.balance


def _integrate(
    uow_factory: UowFactory, clog: CollateralLog, now: datetime, balance: bool
) -> Integrated:
    uow = uow_factory()
    with uow:
        repo = uow.collateral
        size = repo.size(clog.wallet_id)
        frontier = clog.frontier
        if frontier is None or frontier.size != size:
            frontier = load_frontier(uow, clog.wallet_id, size)
        pending = repo.pending(clog.wallet_id, clog.settings.batch_limit)
        if not pending:
            latest = repo.latest_checkpoint(clog.wallet_id)
            shown = _balance_at(repo, clog.wallet_id, size) if balance else None
            fresh = (
                latest is not None
                and latest.size == size
                and ((now - latest.signed_at).total_seconds() < clog.settings.resign_seconds)
            )
            if fresh:
                clog.frontier = frontier
                return Integrated(size, 0, False, frontier.root(), shown)
            note = _checkpoint_note(clog, size, frontier.root(), now)
            repo.save_checkpoint(clog.wallet_id, StoredCheckpoint(size, frontier.root(), note, now))
            uow.commit()
            clog.frontier = frontier
            return Integrated(size, 0, True, frontier.root(), shown)
        grown = frontier.copy()
        stored: list[StoredEntry] = []
        hashes: list[tuple[int, int, bytes]] = []
        for p in pending:
            body = _encode_pending(p)
            stored.append(
                StoredEntry(grown.size, p.kind, body, p.transfer_id, p.tx_hash, p.log_index)
            )
            hashes.extend(grown.append(tlog.leaf_hash(body)))
        shown = None
        if balance:
            moved = next((e for e in reversed(stored) if e.kind == "dt"), None)
            shown = _dt_balance(moved.body) if moved else _balance_at(repo, clog.wallet_id, size)
        repo.insert_entries(clog.wallet_id, stored, now)
        repo.insert_hashes(clog.wallet_id, hashes)
        if repo.delete_pending(clog.wallet_id, [p.id for p in pending]) != len(pending):
            raise _PoolTaken("pool rows already sequenced by another integrator")
        root = grown.root()
        note = _checkpoint_note(clog, grown.size, root, now)
        repo.save_checkpoint(clog.wallet_id, StoredCheckpoint(grown.size, root, note, now))
        if any(p.kind == "dt" for p in pending):
            # Only where a DT movement is sequenced: the reserve statement every start pools
            # would otherwise reach it before a test can move any DT.
            crash_point("collateral.movement_before_commit", clog.faults)
        uow.commit()
    clog.frontier = grown
    if not clog.witnesses:  # otherwise served once put to the witnesses (witnessing.py)
        clog.checkpoint = (time.monotonic(), note, grown.size)
    return Integrated(grown.size, len(pending), True, root, shown)


# ------------------------------------------------------------------ reading


def checkpoint_is_stale(clog: CollateralLog) -> bool:
    cached = clog.checkpoint
    return cached is None or (
        time.monotonic() - cached[0] >= clog.settings.checkpoint_cache_seconds
    )


def checkpoint(uow_factory: UowFactory, clog: CollateralLog) -> tuple[str, int]:
    """The checkpoint served (note, size): the newest signed one, or with witnesses the newest
    put to them, with their cosignatures (:func:`witnessing.served`); read at most every
    ``checkpoint_cache_seconds`` by this replica."""
    cached = clog.checkpoint
    if cached is not None and not checkpoint_is_stale(clog):
        return cached[1], cached[2]
    uow = uow_factory(readonly=True)
    with uow:
        cp = _served(uow, clog)
    clog.checkpoint = (time.monotonic(), cp.note, cp.size)
    return cp.note, cp.size


def _served(uow: CollateralUnitOfWork, clog: CollateralLog) -> StoredCheckpoint:
    """The checkpoint every public answer is given against (see :func:`checkpoint`)."""
    cp = witnessing.served(uow, clog)
    if cp is None:
        raise LogNotReady("the collateral log has no checkpoint yet")
    return cp


def _served_size(uow: CollateralUnitOfWork, clog: CollateralLog) -> int:
    return _served(uow, clog).size


def tile(uow_factory: UowFactory, clog: CollateralLog, path: str) -> tuple[bytes, bool]:
    """The tile or entry bundle at ``path`` (``tile/...``), and whether it is a full one.

    Only what a signed checkpoint covers is served: a tile beyond the tree is 404."""
    try:
        level, n, width = tlog.parse_tile_path(path)
    except ValueError as exc:
        raise InvalidInput(f"not a tile path: {exc}") from None
    count = width or tlog.TILE_WIDTH
    uow = uow_factory(readonly=True)
    with uow:
        size = _served_size(uow, clog)
        if level is None:
            if n * tlog.TILE_WIDTH + count > size:
                raise TileNotFound(f"{path} is beyond the log's {size} entries")
            items = uow.collateral.entry_range(clog.wallet_id, n * tlog.TILE_WIDTH, count)
            data = tlog.encode_bundle(items)
        else:
            hashes_at_level = size >> (tlog.TILE_HEIGHT * level)
            if n * tlog.TILE_WIDTH + count > hashes_at_level:
                raise TileNotFound(f"{path} is beyond the log's {size} entries")
            items = uow.collateral.hash_range(
                clog.wallet_id, tlog.TILE_HEIGHT * level, n * tlog.TILE_WIDTH, count
            )
            data = b"".join(items)
    if len(items) != count:  # the checkpoint is newer than this replica's snapshot of it
        raise TileNotFound(f"{path} is not stored yet")
    return data, width is None


def _entry_json(
    uow: CollateralUnitOfWork, clog: CollateralLog, e: StoredEntry, size: int
) -> dict[str, object]:
    proof = tlog.inclusion_proof(
        e.idx, size, lambda wanted: uow.collateral.hashes(clog.wallet_id, wanted)
    )
    return {
        "index": e.idx,
        "kind": e.kind,
        "entry": json.loads(e.body),
        "entry_base64": base64.b64encode(e.body).decode(),
        "leaf_hash": tlog.leaf_hash(e.body).hex(),
        "tree_size": size,
        "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
    }


def _tree_size(served: int, size: int | None) -> int:
    if size is None:
        return served
    if size < 1 or size > served:
        raise InvalidInput(f"size must be between 1 and the checkpoint's {served}")
    return size


def entry_with_proof(
    uow_factory: UowFactory, clog: CollateralLog, index: int, size: int | None = None
) -> dict[str, object]:
    """One entry, decoded and raw, with its inclusion proof in the tree of ``size`` (default:
    the newest checkpoint's) and that checkpoint's note."""
    uow = uow_factory(readonly=True)
    with uow:
        cp = _served(uow, clog)
        n = _tree_size(cp.size, size)
        if index < 0 or index >= n:
            raise EntryNotFound(f"no entry {index} in a tree of {n}")
        e = uow.collateral.entry(clog.wallet_id, index)
        if e is None:
            raise EntryNotFound(f"no entry {index}")
        out = _entry_json(uow, clog, e, n)
    if cp.size == n:
        out["checkpoint"] = cp.note
    return out


def find_entries(
    uow_factory: UowFactory,
    clog: CollateralLog,
    *,
    transfer_id: str | None = None,
    tx_hash: str | None = None,
) -> list[dict[str, object]]:
    """The entries of a DT transfer (or lock) id, or of a chain transaction, with their proofs."""
    if (transfer_id is None) == (tx_hash is None):
        raise InvalidInput("give exactly one of transfer_id and tx_hash")
    uow = uow_factory(readonly=True)
    with uow:
        n = _served_size(uow, clog)
        repo = uow.collateral
        found = (
            repo.entries_by_transfer(clog.wallet_id, transfer_id)
            if transfer_id is not None
            else repo.entries_by_tx(clog.wallet_id, (tx_hash or "").lower())
        )
        return [_entry_json(uow, clog, e, n) for e in found if e.idx < n]


def consistency(
    uow_factory: UowFactory, clog: CollateralLog, first: int, second: int | None = None
) -> dict[str, object]:
    uow = uow_factory(readonly=True)
    with uow:
        n2 = _tree_size(_served_size(uow, clog), second)
        if first < 1 or first > n2:
            raise InvalidInput(f"first must be between 1 and {n2}")

        def read(wanted: Sequence[tuple[int, int]]) -> Sequence[bytes]:
            return uow.collateral.hashes(clog.wallet_id, wanted)

        proof = tlog.consistency_proof(first, n2, read)
        roots = (tlog.tree_root(first, read), tlog.tree_root(n2, read))
    return {
        "first": first,
        "second": n2,
        "first_root": base64.b64encode(roots[0]).decode(),
        "second_root": base64.b64encode(roots[1]).decode(),
        "proof": [base64.b64encode(h).decode() for h in proof],
    }


def proof_bundle(uow_factory: UowFactory, clog: CollateralLog, index: int) -> str:
    """A C2SP ``tlog-proof`` for one entry against the checkpoint served (with its
    cosignatures); the ``extra`` line carries the entry itself, so the bundle verifies offline
    with the log's key (and the witnesses') alone."""
    uow = uow_factory(readonly=True)
    with uow:
        cp = _served(uow, clog)
        if index < 0 or index >= cp.size:
            raise EntryNotFound(f"no entry {index} in a tree of {cp.size}")
        e = uow.collateral.entry(clog.wallet_id, index)
        if e is None:
            raise EntryNotFound(f"no entry {index}")
        proof = tlog.inclusion_proof(
            index, cp.size, lambda wanted: uow.collateral.hashes(clog.wallet_id, wanted)
        )
    lines = [
        "c2sp.org/tlog-proof@v1",
        "extra " + base64.b64encode(e.body).decode(),
        f"index {index}",
        *(base64.b64encode(h).decode() for h in proof),
        "",
    ]
    return "\n".join(lines) + "\n" + cp.note


def latest_statement(uow_factory: UowFactory, clog: CollateralLog) -> dict[str, object]:
    """The newest reserve statement the log holds, with its inclusion proof."""
    uow = uow_factory(readonly=True)
    with uow:
        n = _served_size(uow, clog)
        e = uow.collateral.last_entry_of_kind(clog.wallet_id, ["statement"])
        if e is None or e.idx >= n:
            raise EntryNotFound("the log holds no reserve statement yet")
        return _entry_json(uow, clog, e, n)


__all__ = [
    "ChainEntry",
    "EntryNotFound",
    "Integrated",
    "LogNotReady",
    "TileNotFound",
    "checkpoint",
    "consistency",
    "entry_with_proof",
    "find_entries",
    "integrate",
    "latest_statement",
    "pool_chain_entries",
    "proof_bundle",
    "rfc3339",
    "statement_due",
    "statement_entry",
    "tile",
]
