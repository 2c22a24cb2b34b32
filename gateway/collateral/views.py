"""Read-side views of the collateral log for people: reserve statements over time, the latest
movements with their chain transactions, and the snapshot the public page renders.

Everything here is read below the checkpoint the log serves (:func:`service.checkpoint`, the
one its public routes answer against): entries at or beyond its size are never shown, so
whatever a view shows can be checked against that checkpoint's root with the public routes
(``/v1/collateral/entries/{index}?size=N``). Numbers stay integers of tiyn; formatting is the
page's business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.collateral import entries as fmt
from gateway.collateral import service, tlog
from gateway.collateral.note import Checkpoint, NoteError, open_note
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork, StoredEntry

MOVEMENT_KINDS = ("dt", "mint", "burn")
MAX_STATEMENTS = 1000
"""Most statements one request returns (the page's chart shows at most this many)."""
MAX_MOVEMENTS = 100


@dataclass(frozen=True, slots=True)
class StatementPoint:
    """A reserve statement: at log index ``index`` the wallet held ``reserve`` tiyn and the
    contract's totalSupply at ``block`` was ``supply``."""

    index: int
    block: int
    block_hash: str
    reserve: int
    supply: int
    time: str


@dataclass(frozen=True, slots=True)
class Movement:
    """A DT movement of the segregated wallet, or a mint or burn on the chain.

    ``amount`` is the signed effect on what ``after`` counts: the wallet's balance for ``dt``,
    the token supply for ``mint`` (+) and ``burn`` (-). ``tx_hash`` is the entry's own chain
    transaction, or for a DT movement that of the mint or redemption naming its transfer
    (``None`` for a refund or a movement made by hand)."""

    index: int
    type: str
    amount: int
    after: int
    time: str | None
    block: int | None
    transfer_id: str | None
    tx_hash: str | None
    log_index: int | None
    entry: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a view: ``items`` newest first, all below ``tree_size`` (the newest
    checkpoint's); ``next_before`` is the ``before`` that continues with older ones."""

    tree_size: int
    items: list[Any]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A signature line of the checkpoint by a key other than the log's."""

    name: str
    key_id: str
    timestamp: int | None
    """The time a ``cosignature/v1`` line states (its signature is 8 + 64 bytes), else None."""
    witness: bool = False
    """By a witness the gateway is configured with (``collateral.witnesses``), and its
    cosignature verifies under that witness's key. Other lines are shown by name only."""


@dataclass(frozen=True, slots=True)
class StatementProof:
    """The newest statement's entry and its inclusion proof in the checkpoint's tree."""

    index: int
    entry: bytes
    proof: list[bytes]


@dataclass(frozen=True, slots=True)
class Overview:
    """What the public page shows, all from the checkpoint ``note`` of ``size`` entries."""

    origin: str
    vkey: str
    note: str
    size: int
    root: bytes
    signed_at: int | None
    """The checkpoint's ``timestamp`` extension (unix seconds)."""
    cosignatures: list[Cosignature]
    witnesses: list[str]
    """The vkeys of the witnesses the gateway is configured with (cosigned or not)."""
    statements: list[StatementPoint]
    """Newest first; the first is the reserve and supply now."""
    newest: StatementProof | None
    movements: list[Movement]

    def age_seconds(self, now: datetime) -> int | None:
        if self.signed_at is None:
            return None
        return max(0, int(now.timestamp()) - self.signed_at)


def _statement(e: StoredEntry) -> StatementPoint:
    s = fmt.decode(e.body)
    assert isinstance(s, fmt.Statement)
    return StatementPoint(e.idx, s.block, s.block_hash, s.reserve, s.supply, s.time)


def _movement(e: StoredEntry, chain_txs: dict[str, str]) -> Movement:
    x = fmt.decode(e.body)
    entry = json.loads(e.body)
    if isinstance(x, fmt.DtMovement):
        tx = chain_txs.get(x.transfer_id)
        return Movement(
            e.idx, "dt", x.amount, x.balance, x.time, None, x.transfer_id, tx, None, entry
        )
    if isinstance(x, fmt.ChainMint):
        return Movement(
            e.idx, "mint", x.amount, x.supply, None, x.block, x.transfer_id, x.tx_hash,
            x.log_index, entry,
        )  # fmt: skip
    assert isinstance(x, fmt.ChainBurn)
    return Movement(
        e.idx, "burn", -x.amount, x.supply, None, x.block, x.transfer_id, x.tx_hash,
        x.log_index, entry,
    )  # fmt: skip


def _below(size: int, before: int | None) -> int:
    return size if before is None else max(0, min(size, before))


def _page(items: Sequence[Any], size: int, limit: int) -> Page:
    more = len(items) == limit and items[-1].index > 0
    return Page(size, list(items), items[-1].index if more else None)


def _movements(
    uow: CollateralUnitOfWork, clog: CollateralLog, size: int, below: int, limit: int
) -> list[Movement]:
    """Movements below ``below``; their chain transactions may be anywhere in the tree of
    ``size`` (a mint's event is logged after its deposit)."""
    found = uow.collateral.newest_of_kinds(clog.wallet_id, MOVEMENT_KINDS, below, limit)
    dt_ids = [e.transfer_id for e in found if e.kind == "dt" and e.transfer_id is not None]
    txs = uow.collateral.chain_txs_of_transfers(clog.wallet_id, dt_ids, size)
    return [_movement(e, txs) for e in found]


def statements(
    uow_factory: service.UowFactory, clog: CollateralLog, limit: int, before: int | None = None
) -> Page:
    """The newest reserve statements below ``before`` (default: all the checkpoint covers)."""
    limit = max(1, min(limit, MAX_STATEMENTS))
    _, size = service.checkpoint(uow_factory, clog)
    uow = uow_factory(readonly=True)
    with uow:
        found = uow.collateral.newest_of_kinds(
            clog.wallet_id, ["statement"], _below(size, before), limit
        )
        return _page([_statement(e) for e in found], size, limit)


def movements(
    uow_factory: service.UowFactory, clog: CollateralLog, limit: int, before: int | None = None
) -> Page:
    """The newest DT movements, mints and burns below ``before``, with their chain txs."""
    limit = max(1, min(limit, MAX_MOVEMENTS))
    _, size = service.checkpoint(uow_factory, clog)
    uow = uow_factory(readonly=True)
    with uow:
        moved = _movements(uow, clog, size, _below(size, before), limit)
        return _page(moved, size, limit)


def cosignatures(clog: CollateralLog, note: str) -> list[Cosignature]:
    """Every signature line of ``note`` by a key other than the log's, in the note's order,
    each checked against the configured witnesses' keys."""
    try:
        opened = open_note(note, [clog.signer.verifier()])
    except NoteError:
        return []
    out = []
    own = (clog.signer.name, clog.signer.key_id)
    peers = {(p.verifier.name, p.verifier.key_id): p.verifier for p in clog.witnesses}
    for name, key_id, signature in opened.signatures:
        if (name, key_id) == own:
            continue
        stamp = int.from_bytes(signature[:8], "big") if len(signature) == 72 else None
        peer = peers.get((name, key_id))
        witness = peer is not None and peer.verify(opened.text.encode(), signature)
        out.append(Cosignature(name, key_id.hex(), stamp, witness))
    return out


def _timestamp(cp: Checkpoint) -> int | None:
    for line in cp.extensions:
        word, _, value = line.partition(" ")
        if word == "timestamp" and value.isdigit():
            return int(value)
    return None


def overview(
    uow_factory: service.UowFactory,
    clog: CollateralLog,
    *,
    chart: int = MAX_STATEMENTS,
    latest: int = 20,
) -> Overview:
    """The page's snapshot: the checkpoint this replica serves, and the statements, movements
    and the newest statement's inclusion proof of the tree that checkpoint signs."""
    note, _ = service.checkpoint(uow_factory, clog)
    cp = Checkpoint.parse(note[: note.index("\n\n") + 1])
    size = cp.size
    uow = uow_factory(readonly=True)
    with uow:
        repo = uow.collateral
        chart = min(chart, MAX_STATEMENTS)
        found = repo.newest_of_kinds(clog.wallet_id, ["statement"], size, chart)
        points = [_statement(e) for e in found]
        newest = None
        if found:
            proof = tlog.inclusion_proof(
                found[0].idx, size, lambda wanted: repo.hashes(clog.wallet_id, wanted)
            )
            newest = StatementProof(found[0].idx, found[0].body, proof)
        moved = _movements(uow, clog, size, size, min(latest, MAX_MOVEMENTS))
    return Overview(
        origin=clog.origin,
        vkey=clog.vkey,
        note=note,
        size=size,
        root=cp.root,
        signed_at=_timestamp(cp),
        cosignatures=cosignatures(clog, note),
        witnesses=[p.verifier.vkey() for p in clog.witnesses],
        statements=points,
        newest=newest,
        movements=moved,
    )


__all__ = [
    "MAX_MOVEMENTS",
    "MAX_STATEMENTS",
    "Cosignature",
    "Movement",
    "Overview",
    "Page",
    "StatementPoint",
    "StatementProof",
    "cosignatures",
    "movements",
    "overview",
    "statements",
]
