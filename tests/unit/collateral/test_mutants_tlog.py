"""The transparency log's codec refuses what it cannot read saying what is wrong (the verifier
reports these words), at the exact limits, and a frontier equals only an identical frontier.

These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

import pytest

from gateway.collateral.tlog import (
    TILE_WIDTH,
    Frontier,
    decode_bundle,
    encode_bundle,
    leaf_hash,
    tile_path,
)


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
