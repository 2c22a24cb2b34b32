"""Properties of the Merkle log core: roots, frontiers, proofs from stored hashes, tiles, bundles.

The oracle is RFC 9162's recursive definition of the Merkle Tree Hash, written out here apart
from the module under test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.collateral.tlog import (
    EMPTY_ROOT,
    MAX_ENTRY,
    MAX_TILE_START,
    Frontier,
    ProofError,
    consistency_proof,
    decode_bundle,
    encode_bundle,
    hash_reader_from_tiles,
    inclusion_proof,
    leaf_hash,
    node_hash,
    parse_tile_path,
    root_of,
    tile_hashes,
    tile_in_tree,
    tile_path,
    tiles_for_size,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

SIZE = 300
EXHAUSTIVE = 64
BIG = 70_000
LEAVES = [leaf_hash(b"movement %d" % i) for i in range(SIZE)]
quick = settings(max_examples=150, deadline=None)


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1, recursively: the independent oracle."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


@dataclass
class Log:
    """A log built leaf by leaf with Frontier.append, as a server would build it."""

    store: dict[tuple[int, int], bytes] = field(default_factory=dict)
    roots: list[bytes] = field(default_factory=list)
    frontiers: list[Frontier] = field(default_factory=list)


def build(leaves: Sequence[bytes], keep_history: bool = True) -> Log:
    log, frontier = Log(), Frontier()
    for leaf in leaves:
        if keep_history:
            log.roots.append(frontier.root())
            log.frontiers.append(frontier.copy())
        for level, index, node in frontier.append(leaf):
            assert (level, index) not in log.store
            log.store[level, index] = node
    log.roots.append(frontier.root())
    log.frontiers.append(frontier.copy())
    return log


LOG = build(LEAVES)


@functools.cache
def big_log() -> Log:
    return build([leaf_hash(i.to_bytes(4, "big")) for i in range(BIG)], keep_history=False)


class Reader:
    """An in-memory HashReader that records each call."""

    def __init__(self, store: dict[tuple[int, int], bytes]) -> None:
        self.store = store
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, pairs: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls.append(list(pairs))
        return [self.store[pair] for pair in pairs]


def flip(proof: list[bytes], at: int) -> list[bytes]:
    tampered = list(proof)
    tampered[at] = bytes([tampered[at][0] ^ 1]) + tampered[at][1:]
    return tampered


# --- roots and frontiers ----------------------------------------------------------------------


def test_frontier_and_root_of_agree_with_rfc_definition_at_every_size() -> None:
    for n in range(SIZE + 1):
        assert LOG.roots[n] == root_of(LEAVES[:n]) == mth(LEAVES[:n]), n


def test_append_stores_each_complete_subtree_once_leaf_first() -> None:
    assert len(LOG.store) == 2 * SIZE - SIZE.bit_count()
    for (level, index), node in LOG.store.items():
        assert node == mth(LEAVES[index << level : (index + 1) << level])
    frontier = Frontier()
    for i, leaf in enumerate(LEAVES[:40]):
        completed = frontier.append(leaf)
        assert completed[0] == (0, i, leaf)
        assert [level for level, _, _ in completed] == list(range(len(completed)))


@quick
@given(st.lists(st.integers(min_value=1, max_value=50), max_size=12))
def test_appends_in_any_batches_give_the_roots_of_root_of(batches: list[int]) -> None:
    frontier, n = Frontier(), 0
    for batch in batches:
        added = LEAVES[n : n + batch]
        completed = frontier.extend(added)
        assert [(lv, ix, h) for lv, ix, h in completed if lv == 0] == [
            (0, n + i, leaf) for i, leaf in enumerate(added)
        ]
        n += len(added)
        assert frontier.size == n
        assert frontier.root() == root_of(LEAVES[:n])


def test_frontier_reloads_from_levels_and_stored_hashes() -> None:
    for n in range(SIZE + 1):
        reloaded = Frontier(n, [LOG.store[pair] for pair in Frontier.levels(n)])
        assert reloaded == LOG.frontiers[n]
        assert Frontier.from_json(LOG.frontiers[n].to_json()) == LOG.frontiers[n]


def test_frontier_copy_is_independent() -> None:
    original = LOG.frontiers[5].copy()
    copy = original.copy()
    copy.append(LEAVES[5])
    assert original == LOG.frontiers[5]
    assert copy == LOG.frontiers[6]


@pytest.mark.parametrize(
    ("size", "hashes"),
    [
        (-1, []),
        (3, [b"\0" * 32]),
        (1, [b"\0" * 31]),
        (0, [b"\0" * 32]),
    ],
)
def test_frontier_refuses_hashes_that_do_not_fit_its_size(size: int, hashes: list[bytes]) -> None:
    with pytest.raises(ValueError):
        Frontier(size, hashes)


@pytest.mark.parametrize(
    "data",
    [{}, {"size": 1}, {"size": 1, "hashes": ["zz"]}, {"size": "1", "hashes": ["00" * 32]}, []],
)
def test_frontier_from_json_refuses_malformed_data(data: object) -> None:
    with pytest.raises(ValueError):
        Frontier.from_json(data)  # type: ignore[arg-type]


def test_frontier_refuses_a_leaf_that_is_not_a_hash() -> None:
    with pytest.raises(ValueError):
        Frontier().append(b"entry")


# --- proofs from stored hashes -----------------------------------------------------------------


def test_tree_root_from_stored_hashes_at_every_size() -> None:
    for n in range(SIZE + 1):
        reader = Reader(LOG.store)
        assert tree_root(n, reader) == LOG.roots[n]
        assert len(reader.calls) == (1 if n else 0)


def test_every_inclusion_proof_verifies_in_small_trees() -> None:
    for size in range(1, EXHAUSTIVE + 1):
        for index in range(size):
            reader = Reader(LOG.store)
            proof = inclusion_proof(index, size, reader)
            verify_inclusion(index, size, LEAVES[index], proof, LOG.roots[size])
            assert len(reader.calls) <= 1
            assert sum(map(len, reader.calls)) <= 2 * size.bit_length()


def test_every_consistency_proof_verifies_in_small_trees() -> None:
    for size2 in range(1, EXHAUSTIVE + 1):
        for size1 in range(1, size2 + 1):
            reader = Reader(LOG.store)
            proof = consistency_proof(size1, size2, reader)
            verify_consistency(size1, size2, proof, LOG.roots[size1], LOG.roots[size2])
            assert len(reader.calls) == (0 if size1 == size2 else 1)
            assert sum(map(len, reader.calls)) <= 2 * size2.bit_length()


index_and_size = st.integers(min_value=1, max_value=SIZE).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n - 1), st.just(n))
)
two_sizes = st.integers(min_value=1, max_value=SIZE).flatmap(
    lambda n: st.tuples(st.integers(min_value=1, max_value=n), st.just(n))
)


@quick
@given(index_and_size, st.data())
def test_inclusion_proofs_verify_and_any_change_is_refused(
    pair: tuple[int, int], data: st.DataObject
) -> None:
    index, size = pair
    proof = inclusion_proof(index, size, Reader(LOG.store))
    assert proof == inclusion_proof(index, size, Reader(LOG.store))
    verify_inclusion(index, size, LEAVES[index], proof, LOG.roots[size])
    if size > 1:
        other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index))
        with pytest.raises(ProofError):
            verify_inclusion(other, size, LEAVES[index], proof, LOG.roots[size])
        with pytest.raises(ProofError):
            verify_inclusion(index, size, LEAVES[other], proof, LOG.roots[size])
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        with pytest.raises(ProofError):
            verify_inclusion(index, size, LEAVES[index], flip(proof, at), LOG.roots[size])


@quick
@given(two_sizes, st.data())
def test_consistency_proofs_verify_and_any_change_is_refused(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    size1, size2 = sizes
    proof = consistency_proof(size1, size2, Reader(LOG.store))
    verify_consistency(size1, size2, proof, LOG.roots[size1], LOG.roots[size2])
    if size1 == size2:
        assert proof == []
        return
    at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, flip(proof, at), LOG.roots[size1], LOG.roots[size2])
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, LOG.roots[size1 - 1], LOG.roots[size2])
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, LOG.roots[size1], LOG.roots[size2 - 1])


@quick
@given(
    st.integers(min_value=1, max_value=BIG).flatmap(
        lambda n: st.tuples(st.integers(min_value=0, max_value=n - 1), st.just(n))
    ),
    st.integers(min_value=1, max_value=BIG),
)
def test_proofs_verify_in_a_tree_of_seventy_thousand(pair: tuple[int, int], size1: int) -> None:
    index, size = pair
    log = big_log()
    reader = Reader(log.store)
    root = tree_root(size, reader)
    leaf = log.store[0, index]
    verify_inclusion(index, size, leaf, inclusion_proof(index, size, reader), root)
    size1 = min(size1, size)
    root1 = tree_root(size1, reader)
    verify_consistency(size1, size, consistency_proof(size1, size, reader), root1, root)
    assert sum(map(len, reader.calls)) <= 8 * size.bit_length()


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5)])
def test_inclusion_proof_outside_the_tree_is_a_value_error(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_proof(index, size, Reader(LOG.store))


@pytest.mark.parametrize(("size1", "size2"), [(0, 0), (0, 5), (6, 5), (-1, 5)])
def test_consistency_proof_outside_rfc_9162_is_a_value_error(size1: int, size2: int) -> None:
    with pytest.raises(ValueError):
        consistency_proof(size1, size2, Reader(LOG.store))


def test_a_reader_that_answers_short_is_refused() -> None:
    with pytest.raises(ValueError, match="returned"):
        inclusion_proof(3, 10, lambda pairs: [])


# --- tiles -------------------------------------------------------------------------------------


def test_tile_paths_follow_the_spec_examples() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(0, 1234067, 12) == "tile/0/x001/x234/067.p/12"
    assert tile_path("entries", 0) == "tile/entries/000"
    assert tile_path(63, 0) == "tile/63/000"
    assert tile_path("entries", 1000, 1) == "tile/entries/x001/000.p/1"
    assert parse_tile_path("tile/entries/x001/000.p/1") == (None, 1000, 1)


def _tile_args(level: int | str) -> st.SearchStrategy[tuple[int | str, int, int | None]]:
    below = MAX_TILE_START >> (8 * ((0 if level == "entries" else int(level)) + 1))
    return st.tuples(
        st.just(level),
        st.integers(min_value=0, max_value=max(below - 1, 0)),
        st.one_of(st.none(), st.integers(min_value=1, max_value=255)),
    )


tile_args = st.one_of(st.just("entries"), st.integers(min_value=0, max_value=63)).flatmap(
    _tile_args
)


@quick
@given(tile_args)
def test_tile_paths_round_trip(args: tuple[int | str, int, int | None]) -> None:
    level, n, width = args
    parsed = parse_tile_path(tile_path(level, n, width))
    assert parsed == (None if level == "entries" else level, n, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/100/000",
        "tile/-1/000",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/x000",
        "tile/0/x000/000",
        "tile/0/x001/234/067",
        "tile/0/001/x234",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/012",
        "tile/0/000.p/",
        "tile/0/000.p/1/2",
        "tile/0/000/extra",
        "tile/0/000/",
        "/tile/0/000",
        "tile/0/000\n",
        "tile/0/\u0660\u0660\u0660",
        "tile/0/" + "x999/" * 10 + "999",
        "tile/1/x999/x999/x999/x999/x999/999",
        "tile/8/001",
        "tile/entries",
        "tile/entry/000",
        "tile/0/000.P/1",
        "",
    ],
)
def test_malformed_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        parse_tile_path(path)


@pytest.mark.parametrize(
    ("level", "n", "width"), [(64, 0, None), (0, -1, None), (0, 0, 0), (0, 0, 256), (True, 0, 1)]
)
def test_tile_path_refuses_values_outside_the_spec(level: int, n: int, width: int | None) -> None:
    with pytest.raises(ValueError):
        tile_path(level, n, width)


def test_tile_hashes_sit_at_eight_tree_levels_per_tile_level() -> None:
    assert tile_hashes(1, 2, 3) == [(8, 512), (8, 513), (8, 514)]
    assert tile_hashes(0, 0) == [(0, i) for i in range(256)]


def test_tiles_for_size_follow_the_spec_examples() -> None:
    tiles = tiles_for_size(70_000)
    assert tiles == [(0, n, None) for n in range(273)] + [
        (0, 273, 112),
        (1, 0, None),
        (1, 1, 17),
        (2, 0, 1),
    ]
    assert tiles_for_size(256) == [(0, 0, None), (1, 0, 1)]
    assert tiles_for_size(0) == []
    for level, n, width in tiles:
        assert tile_in_tree(level, n, width, 70_000)
    assert not tile_in_tree(0, 273, None, 70_000)
    assert not tile_in_tree(0, 273, 113, 70_000)
    assert tile_in_tree(None, 273, 112, 70_000)


def tile_fetcher(
    log: Log, fetched: list[tuple[int, int, int | None]]
) -> Callable[[int, int, int | None], bytes]:
    def fetch(level: int, n: int, width: int | None) -> bytes:
        fetched.append((level, n, width))
        return b"".join(log.store[pair] for pair in tile_hashes(level, n, width))

    return fetch


@quick
@given(
    st.integers(min_value=1, max_value=BIG).flatmap(
        lambda n: st.tuples(st.integers(min_value=0, max_value=n - 1), st.just(n))
    ),
    st.integers(min_value=1, max_value=BIG),
)
def test_proofs_from_tiles_equal_proofs_from_stored_hashes(
    pair: tuple[int, int], size1: int
) -> None:
    index, size = pair
    size1 = min(size1, size)
    log, fetched = big_log(), list[tuple[int, int, int | None]]()
    tiles = hash_reader_from_tiles(size, tile_fetcher(log, fetched))
    store = Reader(log.store)
    assert inclusion_proof(index, size, tiles) == inclusion_proof(index, size, store)
    assert consistency_proof(size1, size, tiles) == consistency_proof(size1, size, store)
    assert tree_root(size, tiles) == tree_root(size, store)
    assert len(fetched) == len(set(fetched))
    for level, n, width in fetched:
        assert tile_in_tree(level, n, width, size)


def test_tile_reader_refuses_hashes_beyond_its_size_and_short_tiles() -> None:
    log = big_log()
    reader = hash_reader_from_tiles(1000, tile_fetcher(log, []))
    with pytest.raises(ValueError):
        reader([(0, 1000)])
    with pytest.raises(ValueError):
        reader([(10, 0)])
    short = hash_reader_from_tiles(1000, lambda level, n, width: b"\0" * 31)
    with pytest.raises(ValueError):
        short([(0, 0)])


# --- entry bundles -----------------------------------------------------------------------------


@quick
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_entry_bundles_round_trip(entries: list[bytes]) -> None:
    assert decode_bundle(encode_bundle(entries)) == entries


def test_entry_bundle_encodes_big_endian_uint16_lengths() -> None:
    assert encode_bundle([b"a", b""]) == b"\x00\x01a\x00\x00"
    assert decode_bundle(encode_bundle([b"x" * MAX_ENTRY])) == [b"x" * MAX_ENTRY]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x02a", b"\x00\x01a\x00", b"\x00\x00" * 257],
)
def test_truncated_empty_or_oversized_bundles_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_bundle(data)


@pytest.mark.parametrize("entries", [[], [b"x" * (MAX_ENTRY + 1)], [b""] * 257])
def test_bundles_that_cannot_be_encoded_are_refused(entries: list[bytes]) -> None:
    with pytest.raises(ValueError):
        encode_bundle(entries)
