"""The chain's anchors of the log: each reserve attestation names one tree of the log.

Every reserve attestation the token contract accepts carries the log's tree size and root hash
at which the log's ``dt`` entries show the attested reserve, and the contract emits them::

    AttestationPosted(uint256 indexed sequence, uint256 reserve, uint256 timestamp,
                      bytes32 walletRefHash, uint256 logSize, bytes32 logRoot,
                      address indexed attestor)
      topic0 = keccak256(
          "AttestationPosted(uint256,uint256,uint256,bytes32,uint256,bytes32,address)")
      topics = [topic0, sequence, attestor]
      data   = reserve, timestamp, walletRefHash, logSize, logRoot (five 32-byte words)

The chain is one history that everyone reads, so these anchors rule out a split view: a log key
holder who shows you a tree other than the one it anchored fails here, whatever else it forged
consistently. For each anchor in the blocks checked (``eth_getLogs`` through your own node):

- the root of the log at ``logSize``, computed from what this run downloaded, equals ``logRoot``;
- the segregated wallet's balance the log shows at that size (the last ``dt`` entry's before
  it, 0 if none) equals the attested ``reserve``.

Either mismatch is ``ANCHOR_MISMATCH``, naming the block, the size and both values.

Where the root at an anchored size comes from:

- a size between the last verified tree's and the checkpoint's: the verifier extends its compact
  range entry by entry and records the root (and the replayed balance) at each anchored size;
- the last verified size itself: the state file's root and balance;
- an older size (an attestation mined after the last run read the chain, naming a tree that run
  had already passed): from the log's tiles, a consistency proof from that size to the signed
  checkpoint (so the root is the signed tree's, whatever the tiles say), and the entries before
  that size each proven included under it, read backwards to the last ``dt`` entry;
- a size above the checkpoint's (the attestation is newer than the checkpoint this run read):
  not checked yet; the next run starts from its block.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.collateral import tlog
from gateway.collateral.entries import DtMovement, EntryError, decode
from gateway.collateral.logclient import WIDTH, LogClient
from gateway.collateral.rpc import Rpc, RpcError, RpcRefused
from gateway.collateral.verdict import ExitCode, Failure

ATTESTATION_POSTED_TOPIC = "0xb7df17b64068b9bcbd4cc160a7dfdc88eb25d0a662ffb5057ba74cfd9b4292ba"
"""keccak256 of the event's signature (above); a unit test recomputes it."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Anchor:
    """One ``AttestationPosted`` event: the log's tree (``size``, ``root``) and the reserve the
    attestor signed for it."""

    block: int
    tx_hash: str
    log_index: int
    sequence: int
    reserve: int
    size: int
    root: bytes

    def describe(self) -> str:
        return (
            f"the attestation at block {self.block} (tx {self.tx_hash}, sequence {self.sequence})"
        )


@dataclass(frozen=True)
class Anchors:
    """What this run checked of the chain's anchors: blocks ``first..last`` (None when no block
    was new), so many anchors matched, the newest one's block and size, and how many name a
    tree newer than the checkpoint read (checked next run)."""

    first: int | None = None
    last: int | None = None
    checked: int = 0
    newest_block: int | None = None
    newest_size: int | None = None
    awaiting: int = 0


def _word(data: bytes, at: int) -> int:
    return int.from_bytes(data[32 * at : 32 * at + 32], "big")


def _anchor(log: dict[str, Any], contract: str) -> Anchor:
    where = f"eth_getLogs: log {log.get('transactionHash')}:{log.get('logIndex')}"
    if str(log.get("address", "")).lower() != contract.lower():
        raise RpcError(f"{where}: from address {log.get('address')}, not the contract")
    try:
        topics = [bytes.fromhex(str(t)[2:]) for t in log["topics"]]
        data = bytes.fromhex(str(log["data"])[2:])
        tx_hash = "0x" + bytes.fromhex(str(log["transactionHash"])[2:]).hex()
        block, log_index = int(log["blockNumber"], 16), int(log["logIndex"], 16)
    except (KeyError, TypeError, ValueError) as exc:
        raise RpcError(f"{where}: malformed log ({exc})") from None
    if len(topics) != 3 or any(len(t) != 32 for t in topics) or len(data) != 5 * 32:
        raise RpcError(f"{where}: not an AttestationPosted event")
    if "0x" + topics[0].hex() != ATTESTATION_POSTED_TOPIC or len(tx_hash) != 66:
        raise RpcError(f"{where}: not an AttestationPosted event")
    return Anchor(
        block=block,
        tx_hash=tx_hash,
        log_index=log_index,
        sequence=int.from_bytes(topics[1], "big"),
        reserve=_word(data, 0),
        size=_word(data, 3),
        root=data[128:160],
    )


def fetch(rpc: Rpc, contract: str, first: int, last: int) -> list[Anchor]:
    """The contract's ``AttestationPosted`` events in blocks ``first..last``, in chain order.
    A node that refuses the range as too large gets it again in halves."""
    if last < first:
        return []
    query = {
        "address": contract,
        "fromBlock": hex(first),
        "toBlock": hex(last),
        "topics": [ATTESTATION_POSTED_TOPIC],
    }
    try:
        logs = rpc.call("eth_getLogs", query)
    except RpcRefused:
        if first == last:
            raise
        middle = (first + last) // 2
        return fetch(rpc, contract, first, middle) + fetch(rpc, contract, middle + 1, last)
    if not isinstance(logs, list):
        raise RpcError(f"eth_getLogs: expected a list, found {type(logs).__name__}")
    found = [_anchor(log, contract) for log in logs if isinstance(log, dict)]
    if len(found) != len(logs):
        raise RpcError("eth_getLogs: a log is not a JSON object")
    return sorted(
        (a for a, log in zip(found, logs, strict=True) if not log.get("removed")),
        key=lambda a: (a.block, a.log_index),
    )


class AnchorCheck:
    """The anchors in blocks ``first..head``, checked against the tree a run verifies.

    Use: :meth:`wanted` gives the sizes whose root and balance the run records with
    :meth:`record` while it extends its compact range; :meth:`finish` checks every anchor once
    the run has verified the checkpoint's root, and raises :class:`Failure` on the first (in
    chain order) that disagrees.
    """

    def __init__(self, anchors: Sequence[Anchor], first: int, head: int) -> None:
        self._anchors = list(anchors)
        self._first, self._head = first, head
        self._points: dict[int, tuple[bytes, int]] = {}

    @classmethod
    def fetch(cls, rpc: Rpc, contract: str, first: int, head: int) -> AnchorCheck:
        return cls(fetch(rpc, contract, first, head), first, head)

    def wanted(self, start: int, end: int) -> frozenset[int]:
        """The anchored sizes in ``start+1..end``: those a run extending the tree of ``start``
        entries to ``end`` passes through."""
        return frozenset(a.size for a in self._anchors if start < a.size <= end)

    def record(self, size: int, root: bytes, balance: int) -> None:
        """The tree of ``size`` entries has ``root``, and the log's balance there is
        ``balance``."""
        self._points[size] = (root, balance)

    def finish(
        self, log: LogClient, size: int, root: bytes, verified: tuple[int, bytes, int]
    ) -> tuple[Anchors, int]:
        """Checks every anchor against the signed tree (``size``, ``root``); ``verified`` is the
        last verified tree (size, root, balance). Returns what was checked and the last block
        the next run need not read again."""
        self._points.setdefault(verified[0], (verified[1], verified[2]))
        old: _OldTrees | None = None
        checked, newest, awaiting, next_block = 0, None, 0, self._head
        for anchor in self._anchors:
            if anchor.size > size:
                awaiting += 1
                next_block = min(next_block, anchor.block - 1)
                continue
            point = self._points.get(anchor.size)
            if point is None:
                old = old or _OldTrees(log, size, root)
                point = old.point(anchor)
            _compare(anchor, *point)
            checked += 1
            newest = anchor
        first = self._first if self._head >= self._first else None
        report = Anchors(
            first=first,
            last=self._head if first is not None else None,
            checked=checked,
            newest_block=newest.block if newest else None,
            newest_size=newest.size if newest else None,
            awaiting=awaiting,
        )
        return report, next_block


def _compare(anchor: Anchor, root: bytes, balance: int) -> None:
    if anchor.root != root:
        raise Failure(
            ExitCode.ANCHOR_MISMATCH,
            f"{anchor.describe()} anchors the log at size {anchor.size} with root "
            f"{_b64(anchor.root)}, but the log served here has root {_b64(root)} at that size: "
            "this is not the history the chain holds",
        )
    if anchor.reserve != balance:
        raise Failure(
            ExitCode.ANCHOR_MISMATCH,
            f"{anchor.describe()} attests a reserve of {anchor.reserve} at log size "
            f"{anchor.size} (root {_b64(anchor.root)}), but the log's balance at that size is "
            f"{balance}",
        )


class _OldTrees:
    """Roots and balances at sizes below the ones this run replayed, from the log's tiles, each
    proven against the signed tree (``size``, ``root``)."""

    def __init__(self, log: LogClient, size: int, root: bytes) -> None:
        self._log, self._size, self._root = log, size, root
        self._read = tlog.hash_reader_from_tiles(size, log.tile)
        self._bundles: dict[int, list[bytes]] = {}

    def point(self, anchor: Anchor) -> tuple[bytes, int]:
        n = anchor.size
        if n == 0:
            return tlog.EMPTY_ROOT, 0
        try:
            proof = tlog.consistency_proof(n, self._size, self._read)
            try:  # the anchored root is the signed tree's prefix: no need to trust the tiles
                tlog.verify_consistency(n, self._size, proof, anchor.root, self._root)
                root = anchor.root
            except tlog.ProofError:
                root = tlog.tree_root(n, self._read)
                tlog.verify_consistency(n, self._size, proof, root, self._root)
            return root, self._balance(n, root)
        except (ValueError, tlog.ProofError) as exc:
            raise Failure(
                ExitCode.ROOT_MISMATCH,
                f"{anchor.describe()} anchors the log at size {anchor.size}, older than this "
                f"run's; the log's tiles prove no tree of that size inside the signed one "
                f"(size {self._size}, root {_b64(self._root)}): {exc}",
            ) from None

    def _bundle(self, n: int) -> list[bytes]:
        if n not in self._bundles:
            width = None if (n + 1) * WIDTH <= self._size else self._size - n * WIDTH
            self._bundles[n] = self._log.bundle(n, width)
        return self._bundles[n]

    def _balance(self, size: int, root: bytes) -> int:
        """The balance of the last ``dt`` entry below ``size``; each entry read on the way is
        proven included in the tree (``size``, ``root``), so none can be hidden or changed."""
        for index in range(size - 1, -1, -1):
            data = self._bundle(index // WIDTH)[index % WIDTH]
            proof = tlog.inclusion_proof(index, size, self._read)
            tlog.verify_inclusion(index, size, tlog.leaf_hash(data), proof, root)
            try:
                entry = decode(data)
            except EntryError as exc:
                raise Failure(ExitCode.MALFORMED_ENTRY, f"entry {index}: {exc}") from None
            if isinstance(entry, DtMovement):
                return entry.balance
        return 0


__all__ = ["ATTESTATION_POSTED_TOPIC", "Anchor", "AnchorCheck", "Anchors", "fetch"]
