"""RFC 9162 Merkle trees, their proofs, and the C2SP tlog-tiles layout: the pure core of the log.

This module is part of the public verifier that anyone may read and run on their own, so it
imports only the standard library.

Vocabulary and invariants:

- Every hash is 32 bytes of SHA-256: a *leaf hash* is ``SHA-256(0x00 || entry)``, an interior
  node ``SHA-256(0x01 || left || right)``, the root of the empty tree ``SHA-256("")``.
- The *stored hash* ``(level, index)`` is the Merkle Tree Hash of the complete subtree of
  ``2**level`` leaves that starts at leaf ``index * 2**level``; level 0 holds the leaf hashes. A
  stored hash never changes once the log has grown past it, so a server keeps each one once and
  builds every root and proof from them.
- The tree of size ``n`` (RFC 9162 MTH) is the fold, right to left, of its *compact range*: the
  stored hashes of the complete subtrees that tile ``[0, n)``, largest first (one per set bit of
  ``n``). Every other node a proof needs is either a stored hash or such a fold over a range that
  ends at ``n`` (an *ephemeral* node); a proof needs O(log n) stored hashes in all.
- Verification follows RFC 9162 2.1.3.2 and 2.1.4.2 as the transparency-dev ``proof`` Go package
  implements them, and raises :class:`ProofError` on every failure. Generation raises
  ``ValueError`` for arguments outside the tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from hashlib import sha256
from typing import Any

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_ENTRY",
    "MAX_TILE_START",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Frontier",
    "HashReader",
    "ProofError",
    "consistency_proof",
    "decode_bundle",
    "encode_bundle",
    "hash_reader_from_tiles",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "parse_tile_path",
    "root_from_inclusion",
    "root_of",
    "tile_hashes",
    "tile_in_tree",
    "tile_path",
    "tiles_for_size",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY = 0xFFFF
"""Largest entry an entry bundle can carry (its length prefix is a big-endian uint16)."""
MAX_TILE_START = 1 << 63
"""Tiles must start below this leaf index: sizes and indices fit a signed 64-bit column."""

EMPTY_ROOT = sha256(b"").digest()

HashReader = Callable[[Sequence[tuple[int, int]]], Sequence[bytes]]
"""Given stored-hash ``(level, index)`` pairs, returns their hashes in the same order."""


class ProofError(Exception):
    """A proof, leaf or root does not verify; the message says which check failed."""


def leaf_hash(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a whole list of leaf hashes, level by level.

    Pairing neighbours and carrying an odd last node up unchanged builds exactly RFC 9162's tree
    (split at the largest power of two below the size), without recursion.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=False)
        ]
        if odd is not None:
            level.append(odd)
    return level[0]


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Root of a compact range (stored hashes left to right, each at most half its left one)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_nodes(begin: int, end: int) -> list[tuple[int, int]]:
    """Stored hashes, largest first, whose fold is MTH(D[begin:end]).

    Holds for every subtree RFC 9162 recursion yields: ``begin`` is a multiple of the smallest
    power of two not below ``end - begin``, so the complete pieces follow the bits of the width.
    """
    nodes = []
    width = end - begin
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            nodes.append((level, begin >> level))
            begin += 1 << level
    return nodes


class Frontier:
    """The compact range of the tree ``[0, size)``: what a log keeps in memory to append.

    Invariant: ``hashes`` holds one hash per set bit of ``size``, largest subtree first, namely
    the stored hashes at :meth:`levels` ``(size)``.
    """

    __slots__ = ("hashes", "size")
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"frontier size {size} is negative")
        if len(hashes) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} hashes, not {len(hashes)}")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("frontier hashes must be 32 bytes")
        self.size = size
        self.hashes: list[bytes] = [bytes(h) for h in hashes]

    @staticmethod
    def levels(size: int) -> list[tuple[int, int]]:
        """The ``(level, index)`` of each stored hash in the compact range of ``size``."""
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        return _range_nodes(0, size)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Adds one leaf hash; returns every stored hash it completes, the leaf first.

        The leaf is ``(0, size_before, leaf)``; each further one is its parent, up to the highest
        subtree the leaf completes, so a server stores exactly what this returns.
        """
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}")
        index, level, node = self.size, 0, bytes(leaf)
        completed = [(0, index, node)]
        while index & 1:
            node = node_hash(self.hashes.pop(), node)
            index >>= 1
            level += 1
            completed.append((level, index, node))
        self.hashes.append(node)
        self.size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Appends leaves in order; returns every stored hash they complete."""
        completed: list[tuple[int, int, bytes]] = []
        for leaf in leaves:
            completed.extend(self.append(leaf))
        return completed

    def root(self) -> bytes:
        return _fold(self.hashes) if self.hashes else EMPTY_ROOT

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "hashes": [h.hex() for h in self.hashes]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Frontier:
        try:
            size, hashes = data["size"], [bytes.fromhex(h) for h in data["hashes"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a frontier: {exc}") from exc
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError("frontier size must be an integer")
        return cls(size, hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self.size == other.size and self.hashes == other.hashes

    def __repr__(self) -> str:
        return f"Frontier(size={self.size}, root={self.root().hex()})"


# --- proofs from stored hashes (the server side) ---------------------------------------------


def _largest_power_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges of RFC 9162 PATH(index, D[0:size]), leaf side first."""
    ranges = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_power_below(hi - lo)
        if m < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m = lo + k, m - k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges of RFC 9162 SUBPROOF(size1, D[0:size2], true), in proof order."""
    ranges = []
    lo, hi, m, whole_old_tree = 0, size2, size1, True
    while m != hi - lo:
        k = _largest_power_below(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m, whole_old_tree = lo + k, m - k, False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _hashes_of_ranges(ranges: Sequence[tuple[int, int]], read: HashReader) -> list[bytes]:
    """MTH of each range, with one call to ``read`` for all the stored hashes they need."""
    pieces = [_range_nodes(begin, end) for begin, end in ranges]
    wanted = [node for piece in pieces for node in piece]
    got = read(wanted) if wanted else []
    if len(got) != len(wanted):
        raise ValueError(f"hash reader returned {len(got)} hashes for {len(wanted)} asked")
    out, at = [], 0
    for piece in pieces:
        out.append(_fold(got[at : at + len(piece)]))
        at += len(piece)
    return out


def inclusion_proof(index: int, size: int, read: HashReader) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    return _hashes_of_ranges(_inclusion_ranges(index, size), read)


def consistency_proof(size1: int, size2: int, read: HashReader) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof from the tree of ``size1`` to that of ``size2``.

    Sizes must satisfy ``0 < size1 <= size2`` (RFC 9162 defines no proof from the empty tree);
    equal sizes give the empty proof.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    return _hashes_of_ranges(_consistency_ranges(size1, size2), read)


def tree_root(size: int, read: HashReader) -> bytes:
    """MTH of the tree of ``size`` leaves, from the stored hashes of its compact range."""
    if size == 0:
        return EMPTY_ROOT
    return _hashes_of_ranges([(0, size)], read)[0]


# --- verification (the client side) ----------------------------------------------------------


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what}[{i}] is {len(h)} bytes, not {HASH_SIZE}")


def _inner_border(index: int, size: int) -> tuple[int, int]:
    """Split of an inclusion path into inner (below the right border) and border nodes."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(h, seed) if index >> i & 1 else node_hash(seed, h)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if index >> i & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def _match(computed: bytes, root: bytes, what: str) -> None:
    if computed != root:
        raise ProofError(f"{what} mismatch: computed {computed.hex()}, expected {root.hex()}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` binds leaf hash ``leaf`` at ``index`` to, in a tree of ``size``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    inner, border = _inner_border(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, expected {inner + border}")
    _check_hashes("proof", proof)
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raises :class:`ProofError` unless ``proof`` puts ``leaf`` at ``index`` under ``root``."""
    _match(root_from_inclusion(index, size, leaf, proof), root, "root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raises :class:`ProofError` unless the tree ``(size2, root2)`` extends ``(size1, root1)``.

    Equal sizes need an empty proof and equal roots; a proof from the empty tree is refused, as
    RFC 9162 defines none (any tree extends it, so a client has nothing to check).
    """
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 <= 0:
        raise ProofError(f"consistency from size {size1} is not defined")
    if size1 == size2:
        if proof:
            raise ProofError(f"sizes are equal but the proof has {len(proof)} hashes")
        _match(root1, root2, "root")
        return
    if not proof:
        raise ProofError("empty consistency proof for different sizes")
    _check_hashes("proof", proof)
    inner, border = _inner_border(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros: root1's largest complete subtree
    inner -= shift
    # The proof starts with that subtree's hash, unless it is the whole old tree (root1 itself).
    if size1 == 1 << shift:
        seed, rest = root1, proof
    else:
        seed, rest = proof[0], proof[1:]
    if len(rest) != inner + border:
        expected = inner + border + len(proof) - len(rest)
        raise ProofError(f"consistency proof has {len(proof)} hashes, expected {expected}")
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    _match(hash1, root1, "root1")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    _match(hash2, root2, "root2")


# --- tiles (C2SP tlog-tiles) -----------------------------------------------------------------

_TILE_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<n>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


def _tile_start(level: int, n: int) -> int:
    """First leaf index a tile spans: ``n * 256**(level + 1)``."""
    return n << (TILE_HEIGHT * (level + 1))


def _check_tile(level: int | None, n: int, width: int | None) -> None:
    if level is not None and not 0 <= level <= 63:
        raise ValueError(f"tile level {level} is not in 0..63")
    if n < 0 or _tile_start(level or 0, n) >= MAX_TILE_START:
        raise ValueError(f"tile index {n} is out of range")
    if width is not None and not 0 < width < TILE_WIDTH:
        raise ValueError(f"partial tile width {width} is not in 1..255")


def tile_path(level: int | str, n: int, width: int | None = None) -> str:
    """``tile/<L>/<N>[.p/<W>]`` with ``N`` in 3-digit elements, ``x`` on all but the last.

    ``level`` is a tile level (0..63) or ``"entries"`` for an entry bundle; ``width`` None is a
    full tile of 256.
    """
    if level != "entries" and (not isinstance(level, int) or isinstance(level, bool)):
        raise ValueError(f"tile level {level!r} is neither an integer nor 'entries'")
    _check_tile(None if level == "entries" else int(level), n, width)
    groups = []
    while True:
        n, rest = divmod(n, 1000)
        groups.append(f"{rest:03d}")
        if n == 0:
            break
    groups.reverse()
    path = f"tile/{level}/" + "/".join(["x" + g for g in groups[:-1]] + groups[-1:])
    return path if width is None else f"{path}.p/{width}"


def parse_tile_path(path: str) -> tuple[int | None, int, int | None]:
    """``(level, n, width)`` of a tile path; level None for entries, width None for full.

    Only the canonical form :func:`tile_path` writes is accepted, so every tile has one name.
    """
    found = _TILE_PATH.fullmatch(path) if len(path) <= 64 else None
    if found is None:
        raise ValueError(f"not a tile path: {path[:80]!r}")
    level = None if found["level"] == "entries" else int(found["level"])
    n = int(found["n"].replace("x", "").replace("/", ""))
    width = int(found["width"]) if found["width"] else None
    if tile_path("entries" if level is None else level, n, width) != path:
        raise ValueError(f"tile path {path!r} is not canonical (leading zero elements)")
    return level, n, width


def tile_hashes(level: int, n: int, width: int | None = None) -> list[tuple[int, int]]:
    """The stored ``(level, index)`` pairs a hash tile holds, in order.

    Tile level ``l`` holds tree level ``8 * l``, indices ``n * 256`` to ``n * 256 + width - 1``.
    """
    _check_tile(level, n, width)
    first = n * TILE_WIDTH
    return [(TILE_HEIGHT * level, first + i) for i in range(width or TILE_WIDTH)]


def tile_in_tree(level: int | None, n: int, width: int | None, size: int) -> bool:
    """Whether every hash (or entry, level None) of the tile exists in a tree of ``size``.

    A log may serve exactly these: a partial tile of a past size is a prefix of a later tile.
    """
    _check_tile(level, n, width)
    level = level or 0
    return (n * TILE_WIDTH + (width or TILE_WIDTH)) << (TILE_HEIGHT * level) <= size


def tiles_for_size(size: int) -> list[tuple[int, int, int | None]]:
    """Every hash tile ``(level, n, width)`` of a tree of ``size`` (width None when full).

    For size 70,000: 273 full level-0 tiles, a level-0 tile of width 112, a full level-1 tile,
    a level-1 tile of width 17 and a level-2 tile of width 1 (tlog-tiles' example). Entry bundles
    follow level 0.
    """
    tiles: list[tuple[int, int, int | None]] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        full = size >> (TILE_HEIGHT * (level + 1))
        tiles.extend((level, n, None) for n in range(full))
        width = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
        if width:
            tiles.append((level, full, width))
        level += 1
    return tiles


def hash_reader_from_tiles(size: int, fetch: Callable[[int, int, int | None], bytes]) -> HashReader:
    """A :data:`HashReader` over the tiles of a tree of ``size``, fetched by ``fetch``.

    ``fetch(level, n, width)`` returns a tile's bytes (width None for a full tile); each tile is
    fetched once per reader. Tiles are not trusted here: a proof built from wrong tiles fails
    verification against the signed root, which is the check that matters.
    """
    tiles: dict[tuple[int, int], list[bytes]] = {}

    def tile(level: int, n: int) -> list[bytes]:
        if (level, n) not in tiles:
            full = tile_in_tree(level, n, None, size)
            width = None if full else (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
            data = fetch(level, n, width)
            if len(data) != HASH_SIZE * (width or TILE_WIDTH):
                raise ValueError(f"{tile_path(level, n, width)} has {len(data)} bytes")
            tiles[level, n] = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        return tiles[level, n]

    def read(pairs: Sequence[tuple[int, int]]) -> list[bytes]:
        out = []
        for level, index in pairs:
            if level < 0 or index < 0 or (index + 1) << level > size:
                raise ValueError(f"stored hash ({level}, {index}) is not in a tree of size {size}")
            tile_level, below = divmod(level, TILE_HEIGHT)
            n, at = divmod(index << below, TILE_WIDTH)
            out.append(root_of(tile(tile_level, n)[at : at + (1 << below)]))
        return out

    return read


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry after its big-endian uint16 length."""
    if not 0 < len(entries) <= TILE_WIDTH:
        raise ValueError(f"a bundle holds 1..{TILE_WIDTH} entries, not {len(entries)}")
    parts: list[bytes] = []
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY:
            raise ValueError(f"entry {i} is {len(entry)} bytes, more than {MAX_ENTRY}")
        parts += (len(entry).to_bytes(2, "big"), entry)
    return b"".join(parts)


def decode_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; ``ValueError`` if empty, truncated or over 256 entries."""
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if len(entries) == TILE_WIDTH:
            raise ValueError(f"bundle holds more than {TILE_WIDTH} entries")
        if at + 2 > len(data):
            raise ValueError(f"bundle truncated in the length of entry {len(entries)}")
        length = int.from_bytes(data[at : at + 2], "big")
        at += 2
        if at + length > len(data):
            raise ValueError(f"bundle truncated in entry {len(entries)}")
        entries.append(bytes(data[at : at + length]))
        at += length
    if not entries:
        raise ValueError("empty bundle")
    return entries
