"""What the log says about the chain, checked against the chain through the user's own node.

For each statement, over the blocks from the previous statement's block + 1 (block 0 for the
log's first statement) to its own block:

- the contract's Minted/Redeemed events and the log's mint/burn entries between the two
  statements match one to one on (tx hash, log index), and then on block, amount, to/from and
  request id / DT wallet reference. An entry with no such event is ``NOT_ON_CHAIN``; an event
  with no entry is ``MISSING_FROM_LOG`` (the statement promised every event up to its block
  before it);
- the statement's block hash and supply are the chain's (``STATEMENT_MISMATCH``), and the
  chain's totalSupply at its block is not above its reserve (``ABOVE_RESERVE``).

totalSupply at an old block needs a node that keeps old state (an archive node). When the node
refuses that call, the statement's supply rests on the events instead: the replay has summed
every Minted and Redeemed event from block 0 (all matched one to one here), and these are the
only two ways the contract changes its supply. The report counts such statements.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from gateway.collateral.entries import ChainMint, Statement
from gateway.collateral.replay import ChainEntry, describe
from gateway.collateral.rpc import ChainEvent, Rpc, RpcError, RpcRefused
from gateway.collateral.verdict import ExitCode, Failure


@dataclass(frozen=True)
class Coverage:
    """What this run checked against the chain: blocks ``first..last`` (None if no new
    statement), so many events and statements, and so many statements by events only."""

    first: int | None = None
    last: int | None = None
    events: int = 0
    statements: int = 0
    by_events_only: int = 0


class ChainCheck:
    """Checks each statement's range of blocks as the replay reaches the statement.

    A statement at entry ``index`` covers the blocks from the previous statement's block + 1
    (``previous``, the last one verified before this run; block 0 if none) to its own, and the
    mint/burn entries between the two statements. Up to ``window`` ranges are checked at once in
    ``pool``; a failure is raised (as :class:`Failure`) once every range before it has passed, so
    it is always the first failing range in log order.
    """

    def __init__(
        self,
        rpc: Rpc,
        contract: str,
        previous: Statement | None,
        pool: ThreadPoolExecutor,
        window: int = 8,
    ) -> None:
        self._rpc, self._contract, self._pool, self._window = rpc, contract, pool, window
        self._next_block = previous.block + 1 if previous is not None else 0
        self._first: int | None = None
        self._last: int | None = None
        self._running: deque[Future[tuple[int, bool]]] = deque()
        self._events = self._statements = self._by_events_only = 0

    def statement(
        self, index: int, statement: Statement, logged: Sequence[tuple[int, ChainEntry]]
    ) -> None:
        """Starts the check of ``statement`` and the event entries ``logged`` since the
        previous statement."""
        first, self._next_block = self._next_block, statement.block + 1
        self._first = first if self._first is None else self._first
        self._last = statement.block
        check = (self._rpc, self._contract, first, index, statement, logged)
        self._running.append(self._pool.submit(_check_range, *check))
        while len(self._running) > self._window:
            self._collect()

    def finish(self) -> Coverage:
        """Waits for every check; what they covered."""
        while self._running:
            self._collect()
        return Coverage(
            self._first, self._last, self._events, self._statements, self._by_events_only
        )

    def _collect(self) -> None:
        try:
            events, by_events_only = self._running.popleft().result()
        except RpcError as exc:
            raise Failure(ExitCode.UNREACHABLE, str(exc)) from exc
        self._events += events
        self._statements += 1
        self._by_events_only += by_events_only


def _check_range(
    rpc: Rpc,
    contract: str,
    first: int,
    index: int,
    statement: Statement,
    logged: Sequence[tuple[int, ChainEntry]],
) -> tuple[int, bool]:
    """One statement's range; returns the number of events and whether the supply rests on the
    events only."""
    events = rpc.events(contract, first, statement.block)
    _match(logged, events, index, first, statement.block)
    return len(events), _statement(rpc, contract, index, statement)


def _fields(entry: ChainEntry, event: ChainEvent) -> list[tuple[str, object, object]]:
    if isinstance(entry, ChainMint):
        account, reference = ("to", entry.to), ("request_id", entry.request_id)
    else:
        account, reference = ("from", entry.from_), ("dt_wallet_ref", entry.dt_wallet_ref)
    return [
        ("type", entry.TYPE, event.kind),
        ("block", entry.block, event.block),
        ("amount", entry.amount, event.amount),
        (account[0], account[1], event.account),
        (reference[0], reference[1], event.reference),
    ]


def _match(
    logged: Sequence[tuple[int, ChainEntry]],
    events: Sequence[ChainEvent],
    statement_index: int,
    first: int,
    last: int,
) -> None:
    on_chain = {(e.tx_hash, e.log_index): e for e in events}
    for index, entry in logged:
        event = on_chain.pop((entry.tx_hash, entry.log_index), None)
        if event is None:
            raise Failure(
                ExitCode.NOT_ON_CHAIN,
                f"{describe(index, entry)}: the contract has no event at tx {entry.tx_hash} "
                f"log {entry.log_index} in blocks {first}..{last}",
            )
        for name, in_log, on_chain_value in _fields(entry, event):
            if in_log != on_chain_value:
                raise Failure(
                    ExitCode.NOT_ON_CHAIN,
                    f"{describe(index, entry)}: {name} is {in_log!r} in the log but "
                    f"{on_chain_value!r} on chain",
                )
    if on_chain:
        event = next(iter(on_chain.values()))  # the first one in chain order
        raise Failure(
            ExitCode.MISSING_FROM_LOG,
            f"{event.describe()} has no entry in the log before the statement at entry "
            f"{statement_index}, which promised every event up to block {last}",
        )


def _statement(rpc: Rpc, contract: str, index: int, s: Statement) -> bool:
    """Checks one statement against the chain; True if its supply rests on the events only."""
    block_hash = rpc.block_hash(s.block)
    if block_hash != s.block_hash:
        raise Failure(
            ExitCode.STATEMENT_MISMATCH,
            f"{describe(index, s)}: block_hash is {s.block_hash} in the log but {block_hash} "
            "on chain",
        )
    try:
        supply = rpc.total_supply(contract, s.block)
    except RpcRefused:
        return True
    if supply != s.supply:
        raise Failure(
            ExitCode.STATEMENT_MISMATCH,
            f"{describe(index, s)}: supply is {s.supply} in the log but totalSupply() at block "
            f"{s.block} is {supply}",
        )
    if supply > s.reserve:
        raise Failure(
            ExitCode.ABOVE_RESERVE,
            f"{describe(index, s)}: totalSupply() at block {s.block} is {supply}, above the "
            f"statement's reserve {s.reserve}",
        )
    return False
