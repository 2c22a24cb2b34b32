"""Domain minor units <-> ISO decimal strings: exact, no floats, refused at the edges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.iso20022 import MAX_MINOR_UNITS, AmountError, from_iso_amount, to_iso_amount


@pytest.mark.parametrize(
    ("minor", "text"),
    [
        (1, "0.01"),
        (10, "0.10"),
        (100, "1.00"),
        (12345, "123.45"),
        (MAX_MINOR_UNITS, "9999999999999999.99"),
    ],
)
def test_minor_units_render_exactly(minor: int, text: str) -> None:
    assert to_iso_amount(minor, "KZT") == text
    assert from_iso_amount(text, "KZT") == minor


@pytest.mark.parametrize("text", ["1", "1.0", "1.00", "1.000", "01.00"])
def test_equivalent_lexical_forms_read_the_same(text: str) -> None:
    assert from_iso_amount(text, "AED") == 100


@pytest.mark.parametrize("text", ["0.001", "1.005", "12.3456"])
def test_too_many_decimals_are_refused(text: str) -> None:
    with pytest.raises(AmountError) as err:
        from_iso_amount(text, "KZT")
    assert err.value.code == "AM12"


@pytest.mark.parametrize("text", ["0", "0.00", "-1.00", "1e3", "abc", "", "10000000000000000.00"])
def test_non_amounts_are_refused(text: str) -> None:
    with pytest.raises(AmountError):
        from_iso_amount(text, "KZT")


@pytest.mark.parametrize("minor", [0, -1, MAX_MINOR_UNITS + 1])
def test_out_of_range_minor_units_are_refused(minor: int) -> None:
    with pytest.raises(AmountError):
        to_iso_amount(minor, "KZT")


def test_floats_and_unsettled_currencies_are_refused() -> None:
    with pytest.raises(AmountError):
        to_iso_amount(1.5, "KZT")  # type: ignore[arg-type]
    with pytest.raises(AmountError):
        to_iso_amount(True, "KZT")
    with pytest.raises(AmountError):
        to_iso_amount(100, "GBP")


@given(st.integers(1, MAX_MINOR_UNITS), st.sampled_from(["KZT", "AED", "CNY", "USD"]))
def test_round_trip_is_exact(minor: int, ccy: str) -> None:
    assert from_iso_amount(to_iso_amount(minor, ccy), ccy) == minor
