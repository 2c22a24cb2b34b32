"""The transparency log's frontiers, tiles and bundles refuse what they cannot hold or read
saying what is wrong (the verifier reports these words), at the exact limits; a frontier equals
only an identical frontier, and the empty one has the empty tree's root.

These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

import pytest

from gateway.collateral.tlog import (
    EMPTY_ROOT,
    MAX_TILE_START,
    TILE_WIDTH,
    Frontier,
    decode_bundle,
    encode_bundle,
    hash_reader_from_tiles,
    leaf_hash,
    parse_tile_path,
    tile_hashes,
    tile_in_tree,
    tile_path,
)


def test_the_empty_frontier_has_the_empty_root() -> None:
    assert (
        Frontier().root()
        == EMPTY_ROOT
        == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )


@pytest.mark.parametrize(
    ("size", "hashes", "message"),
    [
        (-1, [], r"^frontier size -1 is negative$"),
        (3, [bytes(32)], r"^size 3 needs 2 hashes, not 1$"),
        (1, [bytes(31)], r"^frontier hashes must be 32 bytes$"),
    ],
)
def test_a_frontier_that_is_not_one_is_refused_when_built(
    size: int, hashes: list[bytes], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Frontier(size, hashes)


def test_a_frontier_appends_only_32_byte_leaf_hashes() -> None:
    with pytest.raises(ValueError, match=r"^a leaf hash is 32 bytes, not 33$"):
        Frontier().append(bytes(33))


def test_a_negative_tree_size_has_no_levels() -> None:
    with pytest.raises(ValueError, match=r"^tree size -1 is negative$"):
        Frontier.levels(-1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hashes": []}, r"^not a frontier: 'size'$"),
        ({"size": 1, "hashes": ["zz"]}, r"^not a frontier: non-hexadecimal number found"),
        ({"size": True, "hashes": ["00" * 32]}, r"^frontier size must be an integer$"),
        ({"size": 1.0, "hashes": ["00" * 32]}, r"^frontier size must be an integer$"),
    ],
)
def test_a_frontier_that_is_not_one_is_refused_saying_why(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Frontier.from_json(data)


def test_frontiers_are_equal_only_with_the_same_size_and_hashes() -> None:
    one = Frontier()
    one.append(leaf_hash(b"a"))
    other = Frontier()
    other.append(leaf_hash(b"b"))
    assert one != other  # same size, different hashes
    assert one == Frontier.from_json(one.to_json())
    assert Frontier() != one


def test_a_tile_level_must_be_an_integer_or_entries() -> None:
    with pytest.raises(ValueError, match=r"^tile level '1' is neither an integer nor 'entries'$"):
        tile_path("1", 0)


def test_a_bundle_holds_1_to_256_entries_of_at_most_65535_bytes() -> None:
    full = [bytes([i]) for i in range(TILE_WIDTH)]
    assert decode_bundle(encode_bundle(full)) == full
    with pytest.raises(ValueError, match=r"^a bundle holds 1\.\.256 entries, not 257$"):
        encode_bundle([*full, b"x"])
    with pytest.raises(ValueError, match=r"^a bundle holds 1\.\.256 entries, not 0$"):
        encode_bundle([])
    largest = b"\xab" * 0xFFFF
    assert decode_bundle(encode_bundle([largest])) == [largest]
    with pytest.raises(ValueError, match=r"^entry 1 is 65536 bytes, more than 65535$"):
        encode_bundle([b"a", b"\xab" * 0x10000])


def test_a_bundle_encodes_each_length_as_two_big_endian_bytes() -> None:
    assert encode_bundle([b"\x07" * 258, b""]) == b"\x01\x02" + b"\x07" * 258 + b"\x00\x00"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^empty bundle$"),
        (b"\x00", r"^bundle truncated in the length of entry 0$"),
        (b"\x00\x01a\x00", r"^bundle truncated in the length of entry 1$"),
        (b"\x00\x02a", r"^bundle truncated in entry 0$"),
        (b"\x00\x00" * (TILE_WIDTH + 1), r"^bundle holds more than 256 entries$"),
    ],
)
def test_a_bundle_that_cannot_be_read_is_refused_saying_where(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_bundle(data)


def test_a_bundle_reads_lengths_big_endian() -> None:
    assert decode_bundle(b"\x01\x00" + b"z" * 256) == [b"z" * 256]


def test_a_tile_lies_at_levels_0_to_63_below_leaf_2_to_the_63() -> None:
    last = MAX_TILE_START // TILE_WIDTH - 1  # the last level-0 tile that starts in range
    assert tile_path(0, last) == "tile/0/x036/x028/x797/x018/x963/967"
    with pytest.raises(ValueError, match=rf"^tile index {last + 1} is out of range$"):
        tile_path(0, last + 1)
    with pytest.raises(ValueError, match=r"^tile index -1 is out of range$"):
        tile_path(0, -1)
    with pytest.raises(ValueError, match=r"^tile level 64 is not in 0\.\.63$"):
        tile_path(64, 0)
    with pytest.raises(ValueError, match=r"^partial tile width 256 is not in 1\.\.255$"):
        tile_path(0, 0, 256)


@pytest.mark.parametrize(
    ("level", "width", "message"),
    [
        (64, None, r"^tile level 64 is not in 0\.\.63$"),
        (0, 256, r"^partial tile width 256 is not in 1\.\.255$"),
        (0, 0, r"^partial tile width 0 is not in 1\.\.255$"),
    ],
)
def test_a_tile_out_of_range_holds_nothing(level: int, width: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tile_hashes(level, 0, width)
    with pytest.raises(ValueError, match=message):
        tile_in_tree(level, 0, width, 1 << 20)


def test_a_tile_path_is_read_up_to_64_characters() -> None:
    # Both match the pattern; the index is far too large, which only a path that is read says.
    at_limit = "tile/0/" + "x001/" * 10 + "001.p/1"
    assert len(at_limit) == 64
    with pytest.raises(ValueError, match=r"^tile index 1001001001001001001001001001001 is out"):
        parse_tile_path(at_limit)
    over = "tile/12/" + "x001/" * 10 + "001.p/1"
    assert len(over) == 65
    with pytest.raises(ValueError, match=rf"^not a tile path: '{over}'$"):
        parse_tile_path(over)


def test_a_path_that_is_no_tile_is_quoted_up_to_80_characters() -> None:
    with pytest.raises(ValueError, match=rf"^not a tile path: '{'t' * 80}'$"):
        parse_tile_path("t" * 100)


def test_a_tile_path_with_leading_zero_elements_is_refused() -> None:
    message = r"^tile path 'tile/0/x000/001' is not canonical \(leading zero elements\)$"
    with pytest.raises(ValueError, match=message):
        parse_tile_path("tile/0/x000/001")


def test_a_tile_of_the_wrong_length_is_named_with_its_width() -> None:
    read = hash_reader_from_tiles(259, lambda level, n, width: b"a" * 95)
    with pytest.raises(ValueError, match=r"^tile/0/001\.p/3 has 95 bytes$"):
        read([(0, 258)])
    read = hash_reader_from_tiles(259, lambda level, n, width: b"a" * 32 * TILE_WIDTH)
    with pytest.raises(ValueError, match=r"^tile/1/000\.p/1 has 8192 bytes$"):
        read([(8, 0)])


@pytest.mark.parametrize("pair", [(-1, 0), (0, -1), (0, 259), (1, 129)])
def test_a_stored_hash_outside_the_tree_is_not_read(pair: tuple[int, int]) -> None:
    def fetch(level: int, n: int, width: int | None) -> bytes:
        raise AssertionError("no tile is fetched for a hash outside the tree")

    read = hash_reader_from_tiles(259, fetch)
    message = rf"^stored hash \({pair[0]}, {pair[1]}\) is not in a tree of size 259$"
    with pytest.raises(ValueError, match=message):
        read([pair])
