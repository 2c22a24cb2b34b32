"""What the log says about the chain, checked against the chain through the user's own node.

For the blocks from the last verified statement's block + 1 (block 0 on a first run) to the
newest statement's block:

- the contract's Minted/Redeemed events and the log's mint/burn entries before that statement
  match one to one on (tx hash, log index), and then on block, amount, to/from and request id /
  DT wallet reference. An entry with no such event is ``NOT_ON_CHAIN``; an event with no entry is
  ``MISSING_FROM_LOG`` (the statement promised every event up to its block before it);
- every new statement's block hash and supply are the chain's (``STATEMENT_MISMATCH``), and the
  chain's totalSupply at its block is not above its reserve (``ABOVE_RESERVE``).

totalSupply at an old block needs a node that keeps old state (an archive node). When the node
refuses that call, the statement's supply rests on the events instead: the replay has summed
every Minted and Redeemed event from block 0 (all matched one to one here), and these are the
only two ways the contract changes its supply. The report counts such statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.collateral.entries import ChainMint, Statement
from gateway.collateral.replay import ChainEntry, describe
from gateway.collateral.rpc import ChainEvent, Rpc, RpcRefused
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


def check_chain(
    rpc: Rpc,
    contract: str,
    previous: Statement | None,
    statements: Sequence[tuple[int, Statement]],
    pending: Sequence[tuple[int, ChainEntry]],
    pool: ThreadPoolExecutor,
) -> Coverage:
    """Checks the new ``statements`` (in log order) and the event entries before the newest of
    them (``pending``: every event entry after ``previous``, the last verified statement)."""
    if not statements:
        return Coverage()
    newest_index, newest = statements[-1]
    first = previous.block + 1 if previous is not None else 0
    events = rpc.events(contract, first, newest.block)
    logged = [(i, e) for i, e in pending if i < newest_index]
    _match(logged, events, newest_index, first, newest.block)
    results = list(pool.map(lambda item: _statement(rpc, contract, *item), statements))
    return Coverage(first, newest.block, len(events), len(statements), sum(results))


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
