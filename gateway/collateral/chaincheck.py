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
from gateway.collateral.rpc import ChainEvent, Rpc, RpcError
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


Range = tuple[int, int, Statement, Sequence[tuple[int, ChainEntry]]]
"""``(first block, index, statement, event entries)``: what one statement covers."""


class ChainCheck:
    """Checks each statement's range of blocks as the replay reaches the statement.

    A statement at entry ``index`` covers the blocks from the previous statement's block + 1
    (``previous``, the last one verified before this run; block 0 if none) to its own, and the
    mint/burn entries between the two statements. Ranges are checked ``group`` at a time (one
    eth_getLogs and one batch of calls per group), up to ``window`` groups at once in ``pool``;
    a failure is raised (as :class:`Failure`) once every range before it has passed, so it is
    always the first failing range in log order.
    """

    def __init__(
        self,
        rpc: Rpc,
        contract: str,
        previous: Statement | None,
        pool: ThreadPoolExecutor,
        group: int = 50,
        window: int = 4,
    ) -> None:
        self._rpc, self._contract, self._pool = rpc, contract, pool
        self._group_size, self._window = group, window
        self._next_block = previous.block + 1 if previous is not None else 0
        self._group: list[Range] = []
        self._running: deque[Future[Coverage]] = deque()
        self._covered = Coverage()

    def statement(
        self, index: int, statement: Statement, logged: Sequence[tuple[int, ChainEntry]]
    ) -> None:
        """Queues the check of ``statement`` and the event entries ``logged`` since the
        previous statement; may raise the failure of an earlier range."""
        self._group.append((self._next_block, index, statement, logged))
        self._next_block = statement.block + 1
        if len(self._group) >= self._group_size:
            self._submit()

    def finish(self) -> Coverage:
        """Waits for every check; what they covered."""
        self._submit()
        while self._running:
            self._collect()
        return self._covered

    def _submit(self) -> None:
        if self._group:
            group, self._group = self._group, []
            self._running.append(self._pool.submit(_check_group, self._rpc, self._contract, group))
        while len(self._running) > self._window:
            self._collect()

    def _collect(self) -> None:
        try:
            done = self._running.popleft().result()
        except RpcError as exc:
            raise Failure(ExitCode.UNREACHABLE, str(exc)) from exc
        c = self._covered
        self._covered = Coverage(
            c.first if c.first is not None else done.first,
            done.last,
            c.events + done.events,
            c.statements + done.statements,
            c.by_events_only + done.by_events_only,
        )


def _check_group(rpc: Rpc, contract: str, group: Sequence[Range]) -> Coverage:
    """Consecutive statements' ranges, checked in log order."""
    first, last = group[0][0], group[-1][2].block
    events = rpc.events(contract, first, last)
    on_chain = rpc.blocks(contract, [statement.block for _, _, statement, _ in group])
    by_events_only, at = 0, 0
    for (start, index, statement, logged), (block_hash, supply) in zip(
        group, on_chain, strict=True
    ):
        end = at
        while end < len(events) and events[end].block <= statement.block:
            end += 1
        _match(logged, events[at:end], index, start, statement.block)
        at = end
        by_events_only += _statement(index, statement, block_hash, supply)
    return Coverage(first, last, len(events), len(group), by_events_only)


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


def _statement(index: int, s: Statement, block_hash: str, supply: int | None) -> bool:
    """Checks one statement against its block's hash and totalSupply() (None: the node has no
    state that old); True if its supply rests on the events only."""
    if block_hash != s.block_hash:
        raise Failure(
            ExitCode.STATEMENT_MISMATCH,
            f"{describe(index, s)}: block_hash is {s.block_hash} in the log but {block_hash} "
            "on chain",
        )
    if supply is None:
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
