"""A batch's wallet moves (``gateway/ledger/moves.py``): the deltas, the checks the row must pass
and the entries' after-balances, worked out on the service's own batches (a fake unit of work):
applied to the wallets as read, they give what the service computed."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.ledger.model import (
    MAX_AMOUNT,
    CommitLock,
    CreateLock,
    MakeTransfer,
    Operation,
    ReleaseLock,
)
from gateway.ledger.moves import Moves, Needs, wallet_moves
from gateway.ledger.service import _Batch, _read
from tests.support.ledger_fakes import NOW, FakeUnitOfWork, fund, open_wallets, run


def _funded() -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    open_wallets(uow, "a", "b", "c")
    fund(uow, "a", 1_000)
    run(uow, CreateLock("old", "a", "b", 100))
    return uow


def _apply(uow: FakeUnitOfWork, ops: Sequence[Operation]) -> tuple[_Batch, Moves]:
    """The batch of ``ops`` as the service applies it, on the wallets as stored, not written."""
    with uow:
        locks, transfers, wallets = _read(uow.ledger, ops)
    batch = _Batch(wallets, locks, transfers, NOW)
    for op in ops:
        batch.apply(op)
    return batch, wallet_moves(batch.entries, batch.needs)


def test_moves_give_the_balances_and_history_the_service_computed() -> None:
    uow = _funded()
    before = uow.wallets
    ops = [
        MakeTransfer("t-1", "a", "c", 300),
        CreateLock("lk-1", "a", "b", 200),
        CommitLock("old"),
        ReleaseLock("lk-1"),
        MakeTransfer("t-2", "c", "a", 50),
    ]
    batch, moves = _apply(uow, ops)
    by_id = {m.wallet_id: m for m in moves.wallets}
    assert [m.wallet_id for m in moves.wallets] == ["a", "b", "c"]
    for w, m in by_id.items():
        after = batch.wallets[w]
        assert (before[w].posted + m.posted_delta, before[w].reserved + m.reserved_delta) == (
            after.posted,
            after.reserved,
        )
    for e, moved in zip(batch.entries, moves.entries, strict=True):
        final = batch.wallets[e["wallet_id"]]
        assert (final.posted - moved.rest_posted, final.reserved - moved.rest_reserved) == (
            e["posted_after"],
            e["reserved_after"],
        )
    # a sends (a debit and a reserve) and receives; b only receives; c sends after receiving.
    assert (by_id["a"].need, by_id["b"].need, by_id["c"].need) == (
        Needs.SEND,
        Needs.RECEIVE,
        Needs.SEND,
    )
    # a had 900 available: the transfer and the lock took it down to 400 at the lowest.
    assert by_id["a"].min_available == 500
    assert by_id["b"].min_available == 0
    # a's posted after its transfers: -300, then -350 (the lock's commit took 100 between).
    assert by_id["a"].posted_range == (-MAX_AMOUNT + 350, MAX_AMOUNT)
    assert all(m.written for m in moves.wallets)


def test_a_new_locks_beneficiary_is_checked_not_written() -> None:
    _, moves = _apply(_funded(), [CreateLock("lk-2", "a", "c", 10)])
    by_id = {m.wallet_id: m for m in moves.wallets}
    assert by_id["c"].written is False
    assert by_id["c"].need is Needs.RECEIVE
    assert (by_id["a"].written, by_id["a"].need, by_id["a"].min_available) == (
        True,
        Needs.SEND,
        10,
    )
