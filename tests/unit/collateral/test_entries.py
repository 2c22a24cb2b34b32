"""The collateral log's entries: one canonical encoding, and nothing else decodes."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.collateral import entries
from gateway.collateral.entries import (
    ChainBurn,
    ChainMint,
    DtMovement,
    EntryError,
    Statement,
    decode,
    encode,
)
from gateway.stablecoin.model import redemption_transfer_id
from tests.unit.collateral.samples import ADDR, BURN, DT, MINT, STATEMENT, TX


def test_a_dt_movement_has_exactly_this_encoding() -> None:
    assert encode(DT) == (
        b'{"amount":1500,"balance":1500,"op":"transfer","time":"2026-12-06T14:44:30.123Z",'
        b'"transfer_id":"dep-1","type":"dt","v":1}'
    )


def test_a_burn_is_encoded_with_the_key_from() -> None:
    obj = json.loads(encode(BURN))
    assert obj["from"] == ADDR
    assert "from_" not in obj


@pytest.mark.parametrize("entry", [DT, MINT, BURN, STATEMENT], ids=lambda e: e.TYPE)
def test_every_type_decodes_to_the_entry_it_was_encoded_from(entry: entries.Entry) -> None:
    assert decode(encode(entry)) == entry


def test_a_mint_without_a_deposit_transfer_carries_null() -> None:
    mint = ChainMint(**{**MINT.__dict__, "transfer_id": None})
    assert b'"transfer_id":null' in encode(mint)
    assert decode(encode(mint)) == mint


def test_the_payout_id_formula_is_the_stablecoin_services() -> None:
    assert entries.redemption_transfer_id("0x" + "AB" * 32, 7) == redemption_transfer_id(
        "0x" + "AB" * 32, 7
    )


def _reencoded(entry: entries.Entry, **changes: object) -> bytes:
    obj = json.loads(encode(entry))
    obj.update(changes)
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode(DT).replace(b",", b", ", 1), "not in canonical form"),
        (encode(DT).replace(b'"amount":1500,', b"") + b"", "missing keys ['amount']"),
        (b'{"v":1,"type":"dt","amount":1500}', "missing keys"),
        (encode(DT)[:-1] + b',"extra":1}', "unknown keys ['extra']"),
        (encode(DT)[:-1] + b',"v":1}', "appears twice"),
        (encode(DT).replace(b"1500,", b"1500.0,", 1), "integers only"),
        (encode(DT).replace(b"1500,", b"15e2,", 1), "integers only"),
        (encode(DT).replace(b"1500,", b"NaN,", 1), "integers only"),
        (encode(DT).replace(b"dep-1", b"d\xc3\xa9p-1"), "ASCII only"),
        (encode(DT).replace(b"dep-1", b"dep\\/1"), "not in canonical form"),
        (encode(DT).replace(b"dep-1", b"d\\u00E9p"), "not in canonical form"),
        (_reencoded(DT, v=2), "v: expected 1"),
        (_reencoded(DT, v=True), "v: expected 1"),
        (_reencoded(DT, type="gift"), "type: expected one of"),
        (_reencoded(DT, amount=0), "amount: expected a non-zero integer"),
        (_reencoded(DT, amount=True), "amount: expected an integer"),
        (_reencoded(DT, amount="1500"), "amount: expected an integer"),
        (_reencoded(DT, balance=-1), "balance: expected an integer >= 0"),
        (_reencoded(DT, op="steal"), "op: expected one of"),
        (_reencoded(DT, transfer_id=""), "transfer_id: expected a non-empty string"),
        (_reencoded(DT, time="2026-12-06T14:44:30Z"), "time: expected RFC 3339"),
        (_reencoded(DT, time="2026-12-06T14:44:30.123+00:00"), "time: expected RFC 3339"),
        (_reencoded(DT, time="2026-02-30T14:44:30.123Z"), "time: expected RFC 3339"),
        (_reencoded(MINT, tx_hash=TX.upper().replace("0X", "0x")), "tx_hash: expected"),
        (_reencoded(MINT, to="0x" + "cd" * 19), "to: expected"),
        (_reencoded(MINT, amount=0), "amount: expected an integer >= 1"),
        (_reencoded(MINT, request_id="0x01"), "request_id: expected"),
        (_reencoded(MINT, supply=-5), "supply: expected an integer >= 0"),
        (_reencoded(BURN, transfer_id="redeem-x-4"), "transfer_id: expected 'redeem-"),
        (_reencoded(BURN, dt_wallet_ref=""), "dt_wallet_ref: expected a non-empty string"),
        (_reencoded(STATEMENT, block_hash="0x00"), "block_hash: expected"),
        (_reencoded(STATEMENT, reserve=1.5), "integers only"),
        (b"[1,2]", "expected a JSON object"),
        (b"", "not JSON"),
        (b'{"v":1', "not JSON"),
    ],
)
def test_anything_but_the_canonical_encoding_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(EntryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode(data)


def test_an_entry_too_long_for_a_bundle_is_refused_both_ways() -> None:
    long = DtMovement(**{**DT.__dict__, "transfer_id": "t" * entries.MAX_SIZE})
    with pytest.raises(EntryError, match="at most 65534 bytes"):
        encode(long)
    with pytest.raises(EntryError, match="at most 65534 bytes"):
        decode(b" " * 65_535)


def test_an_invalid_entry_cannot_be_built() -> None:
    with pytest.raises(EntryError, match="amount"):
        DtMovement(transfer_id="t", op="issue", amount=0, balance=0, time=DT.time)


_ints = st.integers(min_value=0, max_value=2**256 - 1)
_hashes = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
_addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
_texts = st.text(min_size=1, max_size=40)
_times = st.datetimes(min_value=datetime(1970, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
)


@st.composite
def _burns(draw: st.DrawFn) -> ChainBurn:
    tx, index = draw(_hashes), draw(st.integers(min_value=0, max_value=10_000))
    return ChainBurn(
        tx_hash=tx,
        log_index=index,
        block=draw(_ints),
        from_=draw(_addresses),
        amount=draw(_ints.filter(bool)),
        dt_wallet_ref=draw(_texts),
        transfer_id=entries.redemption_transfer_id(tx, index),
        supply=draw(_ints),
    )


_any_entry = st.one_of(
    st.builds(
        DtMovement,
        transfer_id=_texts,
        op=st.sampled_from(sorted(entries.DT_OPS)),
        amount=st.integers().filter(bool),
        balance=_ints,
        time=_times,
    ),
    st.builds(
        ChainMint,
        tx_hash=_hashes,
        log_index=_ints,
        block=_ints,
        to=_addresses,
        amount=_ints.filter(bool),
        request_id=_hashes,
        transfer_id=st.none() | _texts,
        supply=_ints,
    ),
    _burns(),
    st.builds(Statement, block=_ints, block_hash=_hashes, supply=_ints, reserve=_ints, time=_times),
)


@given(_any_entry)
def test_any_entry_round_trips_through_ascii_bytes(entry: entries.Entry) -> None:
    data = encode(entry)
    data.decode("ascii")
    assert decode(data) == entry
