"""Each field of a collateral log entry is refused outside its domain, at the exact bound, in
words that name the field, what it must be and what was found (the verifier reports them).

These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.collateral.entries import (
    MAX_SIZE,
    ChainBurn,
    DtMovement,
    Entry,
    EntryError,
    decode,
    encode,
    redemption_transfer_id,
)
from tests.unit.collateral.samples import BURN, DT, MINT, STATEMENT, TX


def _with(entry: Entry, attr: str, value: object) -> Entry:
    """``entry`` with one field changed; a burn's payout id follows its log index."""
    if isinstance(entry, ChainBurn) and attr == "log_index" and type(value) is int:
        return replace(entry, log_index=value, transfer_id=redemption_transfer_id(TX, value))
    return replace(entry, **{attr: value})


# (entry, attribute, name in the entry and its messages, smallest value allowed)
BOUNDED = [
    (DT, "balance", "balance", 0),
    (MINT, "log_index", "log_index", 0),
    (MINT, "block", "block", 0),
    (MINT, "amount", "amount", 1),
    (MINT, "supply", "supply", 0),
    (BURN, "log_index", "log_index", 0),
    (BURN, "block", "block", 0),
    (BURN, "amount", "amount", 1),
    (BURN, "supply", "supply", 0),
    (STATEMENT, "block", "block", 0),
    (STATEMENT, "supply", "supply", 0),
    (STATEMENT, "reserve", "reserve", 0),
]


@pytest.mark.parametrize(
    ("entry", "attr", "name", "least"), BOUNDED, ids=[f"{e.TYPE}.{a}" for e, a, *_ in BOUNDED]
)
def test_an_integer_field_holds_its_least_value_and_nothing_below(
    entry: Entry, attr: str, name: str, least: int
) -> None:
    at_least = _with(entry, attr, least)
    assert decode(encode(at_least)) == at_least
    message = rf"^{name}: expected an integer >= {least}, found {least - 1}$"
    with pytest.raises(EntryError, match=message):
        _with(entry, attr, least - 1)
    with pytest.raises(EntryError, match=rf"^{name}: expected an integer >= {least}, found True$"):
        _with(entry, attr, True)


def test_a_dt_movement_moves_a_non_zero_amount_either_way() -> None:
    for amount in (-1, 1):
        moved = replace(DT, amount=amount)
        assert decode(encode(moved)) == moved
    with pytest.raises(EntryError, match=r"^amount: expected a non-zero integer, found 0$"):
        replace(DT, amount=0)
    with pytest.raises(EntryError, match=r"^amount: expected an integer, found '1'$"):
        replace(DT, amount="1")


HASH = '"0x" \\+ 64 lowercase hex digits'
ADDRESS = '"0x" \\+ 40 lowercase hex digits'
TIMES = r"RFC 3339 UTC with milliseconds, e\.g\. 2026-01-31T23:59:59\.123Z"
TEXT = "a non-empty string"

# (entry, attribute, name in the entry and its messages, what it must be)
SHAPED = [
    (DT, "transfer_id", "transfer_id", TEXT),
    (DT, "time", "time", TIMES),
    (MINT, "tx_hash", "tx_hash", HASH),
    (MINT, "to", "to", ADDRESS),
    (MINT, "request_id", "request_id", HASH),
    (MINT, "transfer_id", "transfer_id", TEXT),
    (BURN, "tx_hash", "tx_hash", HASH),
    (BURN, "from_", "from", ADDRESS),
    (BURN, "dt_wallet_ref", "dt_wallet_ref", TEXT),
    (STATEMENT, "block_hash", "block_hash", HASH),
    (STATEMENT, "time", "time", TIMES),
]


@pytest.mark.parametrize(
    ("entry", "attr", "name", "must"), SHAPED, ids=[f"{e.TYPE}.{a}" for e, a, *_ in SHAPED]
)
def test_a_text_field_out_of_shape_is_refused_naming_it(
    entry: Entry, attr: str, name: str, must: str
) -> None:
    with pytest.raises(EntryError, match=rf"^{name}: expected {must}, found ''$"):
        _with(entry, attr, "")
    with pytest.raises(EntryError, match=rf"^{name}: expected {must}, found 7$"):
        _with(entry, attr, 7)


def test_a_burn_names_the_payout_id_it_expected_and_the_one_it_found() -> None:
    expected = redemption_transfer_id(TX, 4)
    message = rf"^transfer_id: expected '{expected}', found 'redeem-other-4'$"
    with pytest.raises(EntryError, match=message):
        replace(BURN, transfer_id="redeem-other-4")


def _movement_of_size(size: int) -> DtMovement:
    """A dt entry whose encoding is ``size`` bytes: its transfer id takes up the rest."""
    return replace(DT, transfer_id="d" * (size - len(encode(DT)) + len(DT.transfer_id)))


def test_an_entry_is_at_most_65534_bytes() -> None:
    longest = _movement_of_size(MAX_SIZE)
    assert len(encode(longest)) == MAX_SIZE == 65_534
    assert decode(encode(longest)) == longest
    too_long = _movement_of_size(MAX_SIZE + 1)
    with pytest.raises(EntryError, match=r"^entry: expected at most 65534 bytes, found 65535$"):
        encode(too_long)


@pytest.mark.parametrize("time", ["2026-02-30T14:44:30.123Z", "2026-12-06T24:00:00.000Z"])
def test_a_time_of_the_right_shape_must_also_be_a_real_date_and_time(time: str) -> None:
    with pytest.raises(EntryError, match=rf"^time: expected {TIMES}, found '{time}'$"):
        replace(STATEMENT, time=time)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", r"^expected a JSON object, found list$"),
        (b'{"type":"dt","v":2}', r"^v: expected 1, found 2$"),
        (b'{"type":"dt","v":true}', r"^v: expected 1, found True$"),
        (b'{"type":"dt"}', r"^v: expected 1, found None$"),
        (
            b'{"type":"deposit","v":1}',
            r"^type: expected one of burn, dt, mint, statement, found 'deposit'$",
        ),
        (b'{"type":[],"v":1}', r"^type: expected one of burn, dt, mint, statement, found \[\]$"),
    ],
)
def test_bytes_that_are_no_known_entry_are_refused_saying_what_they_are(
    data: bytes, message: str
) -> None:
    with pytest.raises(EntryError, match=message):
        decode(data)


def test_a_dt_movement_names_the_operations_it_may_record() -> None:
    message = r"^op: expected one of issue, lock_commit, redeem, transfer, found 'mint'$"
    with pytest.raises(EntryError, match=message):
        replace(DT, op="mint")
