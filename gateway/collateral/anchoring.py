"""The log's side of a reserve attestation: the signed tree it anchors, and the reserve it shows.

Each reserve attestation the gateway posts carries the log's tree size and root hash, and the
reserve it attests is the segregated wallet's balance *as the log shows it at that size* (the
last ``dt`` entry's balance before it), so that anyone can check the three together against the
chain (:mod:`gateway.collateral.anchors`). For the attestation to cover a mint, its tree must
already hold the mint's deposit: :func:`anchor_point` integrates the pool on demand (every DT
movement committed before the call is in the pool, in order) instead of waiting for the
``collateral.integrate`` job's next period, and takes the tree that integration signed (or found
signed, when the job had just sequenced the pool).

Integrating here is safe beside the job and other replicas: two integrators cannot both commit
(the loser rolls back and :func:`~gateway.collateral.service.integrate` reports ``size == -1``),
so a call that lost simply integrates again; once a call of its own has seen the pool empty (or
sequenced all of it), every movement committed before it is in the tree it reports.

The integration returns the tree's root and the balance its entries show, read inside its own
transaction, so no other transaction is needed.

Durability, on a SQLite file: the on-demand integration commits without waiting for its own
fsync (``NO_SYNC``), then waits, as every read does, until what it read is on disk (the group
commit's barrier: free when no writer is between its COMMIT and its fsync). So every pool row it
sequenced is durable before the tree is attested; the integration itself may be lost in a crash,
but the next one sequences the same durable rows in the same order (pool ids, canonical
encodings), so the tree of the attested size comes back with the same root. This keeps one
fsync out of every mint's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy.engine import Engine

from gateway.collateral import entries as fmt
from gateway.collateral.runtime import CollateralLog
from gateway.collateral.service import integrate
from gateway.collateral.store import CollateralUnitOfWork
from gateway.errors import Unavailable
from gateway.sqlite.walsync import NO_SYNC, group_sync


class AnchorUnavailable(Unavailable):
    """The log could not be brought up to date for an attestation (other integrators kept
    winning, or it has no checkpoint): the attestation, and the mint, wait for a retry."""

    code = "ANCHOR_UNAVAILABLE"
    title = "The collateral log could not be anchored now"


@dataclass(frozen=True, slots=True)
class AnchorPoint:
    """A signed tree of the log (``size``, ``root``) and the segregated wallet's balance its
    entries show (``reserve``, in tiyn)."""

    size: int
    root: bytes
    reserve: int


def anchor_point(engine: Engine, clog: CollateralLog, attempts: int = 5) -> AnchorPoint:
    """The newest signed tree, once it holds every DT movement committed before this call."""
    no_sync = partial(CollateralUnitOfWork, engine.execution_options(**{NO_SYNC: True}))
    for _ in range(attempts):
        done = integrate(no_sync, clog, balance=True)
        if done.size >= 0 and done.added < clog.settings.batch_limit:
            break
    else:
        raise AnchorUnavailable(f"the collateral log was not integrated in {attempts} attempts")
    sync = group_sync(engine)
    if sync is not None:  # what the integration read (the pool rows) is on disk from here on
        sync.barrier()
    if done.balance is not None:
        return AnchorPoint(done.size, done.root, done.balance)
    return _read_anchor(engine, clog, attempts)  # another integrator committed meanwhile


def _read_anchor(engine: Engine, clog: CollateralLog, attempts: int) -> AnchorPoint:
    """The newest signed checkpoint and the balance at its size, read from the tables."""
    uow = CollateralUnitOfWork(engine, readonly=True)
    with uow:
        for _ in range(attempts):
            checkpoint = uow.collateral.latest_checkpoint(clog.wallet_id)
            if checkpoint is None:
                raise AnchorUnavailable("the collateral log has no checkpoint yet")
            last_dt = uow.collateral.last_entry_of_kind(clog.wallet_id, ["dt"])
            # An integrator may commit between the two reads (the database need not give this
            # transaction one snapshot): entries come with their checkpoint, so read it again.
            if last_dt is None or last_dt.idx < checkpoint.size:
                break
        else:
            raise AnchorUnavailable("the collateral log grew faster than it could be read")
    reserve = 0
    if last_dt is not None:
        movement = fmt.decode(last_dt.body)
        assert isinstance(movement, fmt.DtMovement)
        reserve = movement.balance
    return AnchorPoint(checkpoint.size, checkpoint.root, reserve)


__all__ = ["AnchorPoint", "AnchorUnavailable", "anchor_point"]
