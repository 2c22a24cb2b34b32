"""Replaying the collateral log's entries in order: the bookkeeping must add up at every step.

:class:`Replay` holds what the log has said so far and checks each next entry against it:

- every entry decodes canonically (``MALFORMED_ENTRY``);
- ``dt``: balance = previous balance + amount, never below zero (``BALANCE``);
- ``mint``/``burn``: supply = previous supply +/- amount (``SUPPLY``); they come in chain order,
  strictly increasing ``(block, log_index)``, and each is in a block after the last statement's,
  which promised every event up to its block before it (``OUT_OF_ORDER``);
- ``statement``: reserve = replayed balance (``BALANCE``), supply = replayed supply
  (``SUPPLY``); its block is not before the last statement's nor before the last event's
  (``OUT_OF_ORDER``);
- after every entry, supply <= balance: the tokens never exceed the DT (``ABOVE_RESERVE``).

What the log says about the chain is checked against the chain elsewhere (``chaincheck``): the
replay keeps the mint/burn entries since the last statement, which the caller takes when the
next statement comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.collateral.entries import (
    ChainBurn,
    ChainMint,
    DtMovement,
    Entry,
    EntryError,
    Statement,
    decode,
    encode,
)
from gateway.collateral.verdict import ExitCode, Failure

ChainEntry = ChainMint | ChainBurn


def describe(index: int, entry: ChainEntry | Statement | DtMovement) -> str:
    """``entry 17 (mint tx 0xab..., log 3, block 12)``: how messages name an entry."""
    if isinstance(entry, DtMovement):
        return f"entry {index} (dt {entry.op} {entry.transfer_id})"
    if isinstance(entry, Statement):
        return f"entry {index} (statement at block {entry.block})"
    e = entry
    return f"entry {index} ({e.TYPE} tx {e.tx_hash} log {e.log_index}, block {e.block})"


@dataclass
class Replay:
    """The log's running totals after its first ``size`` entries, and what awaits the chain.

    ``pending`` holds the mint/burn entries after ``last_statement`` (or all of them while the
    log has no statement), until :meth:`take_pending`.
    """

    size: int = 0
    balance: int = 0
    supply: int = 0
    last_event: tuple[int, int] | None = None
    last_statement: tuple[int, Statement] | None = None
    pending: list[tuple[int, ChainEntry]] = field(default_factory=list)

    def apply(self, data: bytes) -> Entry:
        """Checks and applies the entry at index ``size``; raises :class:`Failure`."""
        index = self.size
        try:
            entry = decode(data)
        except EntryError as exc:
            raise Failure(ExitCode.MALFORMED_ENTRY, f"entry {index}: {exc}") from None
        if isinstance(entry, DtMovement):
            self._dt(index, entry)
        elif isinstance(entry, Statement):
            self._statement(index, entry)
        else:
            self._event(index, entry)
        self.size += 1
        if self.supply > self.balance:
            raise Failure(
                ExitCode.ABOVE_RESERVE,
                f"after {describe(index, entry)}: supply {self.supply} is above the reserve "
                f"(the segregated wallet's balance) {self.balance}",
            )
        return entry

    def _dt(self, index: int, e: DtMovement) -> None:
        expected = self.balance + e.amount
        if e.balance != expected:
            why = " (the wallet would go below zero)" if expected < 0 else ""
            raise Failure(
                ExitCode.BALANCE,
                f"{describe(index, e)}: balance expected {expected} (previous {self.balance} "
                f"{e.amount:+d}){why}, found {e.balance}",
            )
        self.balance = e.balance

    def _event(self, index: int, e: ChainEntry) -> None:
        position = (e.block, e.log_index)
        if self.last_event is not None and position <= self.last_event:
            raise Failure(
                ExitCode.OUT_OF_ORDER,
                f"{describe(index, e)}: not after the previous event entry (block "
                f"{self.last_event[0]}, log {self.last_event[1]}): events must be in chain order",
            )
        if self.last_statement is not None and e.block <= self.last_statement[1].block:
            at, statement = self.last_statement
            raise Failure(
                ExitCode.OUT_OF_ORDER,
                f"{describe(index, e)}: comes after the statement at entry {at}, which promised "
                f"every event up to block {statement.block} before it",
            )
        signed = e.amount if isinstance(e, ChainMint) else -e.amount
        expected = self.supply + signed
        if e.supply != expected:
            raise Failure(
                ExitCode.SUPPLY,
                f"{describe(index, e)}: supply expected {expected} (previous {self.supply} "
                f"{signed:+d}), found {e.supply}",
            )
        self.supply = e.supply
        self.last_event = position
        self.pending.append((index, e))

    def _statement(self, index: int, s: Statement) -> None:
        if self.last_statement is not None and s.block < self.last_statement[1].block:
            raise Failure(
                ExitCode.OUT_OF_ORDER,
                f"{describe(index, s)}: before the previous statement's block "
                f"{self.last_statement[1].block}",
            )
        if self.last_event is not None and s.block < self.last_event[0]:
            raise Failure(
                ExitCode.OUT_OF_ORDER,
                f"{describe(index, s)}: comes after an event entry of block {self.last_event[0]}",
            )
        if s.reserve != self.balance:
            raise Failure(
                ExitCode.BALANCE,
                f"{describe(index, s)}: reserve expected {self.balance} (the replayed "
                f"balance), found {s.reserve}",
            )
        if s.supply != self.supply:
            raise Failure(
                ExitCode.SUPPLY,
                f"{describe(index, s)}: supply expected {self.supply} (the replayed supply), "
                f"found {s.supply}",
            )
        self.last_statement = (index, s)

    def take_pending(self) -> list[tuple[int, ChainEntry]]:
        """The mint/burn entries since the previous statement, which the statement just applied
        covers; the replay keeps only the ones that come after it."""
        pending, self.pending = self.pending, []
        return pending

    # ------------------------------------------------------------------------ state file

    def to_json(self) -> dict[str, Any]:
        """The running totals and the events no statement covers yet, for the state file."""

        def item(index: int, entry: ChainEntry | Statement) -> dict[str, Any]:
            return {"index": index, "entry": encode(entry).decode("ascii")}

        return {
            "size": self.size,
            "balance": self.balance,
            "supply": self.supply,
            "last_event": list(self.last_event) if self.last_event else None,
            "last_statement": item(*self.last_statement) if self.last_statement else None,
            "pending": [item(i, e) for i, e in self.pending],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Replay:
        """Reads :meth:`to_json`'s output; ``ValueError`` (or ``KeyError``/``TypeError``) if it is
        not that."""

        def item(obj: dict[str, Any]) -> tuple[int, Any]:
            index = obj["index"]
            if type(index) is not int:
                raise ValueError(f"entry index {index!r} is not an integer")
            return index, decode(obj["entry"].encode("ascii"))

        last_event = None
        if data["last_event"] is not None:
            block, log_index = data["last_event"]
            if type(block) is not int or type(log_index) is not int:
                raise ValueError(f"last_event {data['last_event']!r} is not two integers")
            last_event = (block, log_index)
        replay = cls(
            size=data["size"],
            balance=data["balance"],
            supply=data["supply"],
            last_event=last_event,
            last_statement=item(data["last_statement"]) if data["last_statement"] else None,
            pending=[item(p) for p in data["pending"]],
        )
        if replay.last_statement and not isinstance(replay.last_statement[1], Statement):
            raise ValueError("last_statement is not a statement")
        if any(isinstance(e, (DtMovement, Statement)) for _, e in replay.pending):
            raise ValueError("pending holds an entry that is not a mint or burn")
        for name in ("size", "balance", "supply"):
            if type(getattr(replay, name)) is not int:
                raise ValueError(f"{name} is not an integer")
        return replay
