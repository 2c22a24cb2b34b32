"""A trade's ``value_time`` becomes milliseconds since the epoch exactly: the deadline the
connector decides by is the one the trade states, never a millisecond earlier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.connector.registry import parse_time
from gateway.errors import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        # Instants a float timestamp turns into one millisecond less.
        ("1974-05-04T10:03:21.987Z", 136_893_801_987),
        ("2004-03-15T07:55:47.472Z", 1_079_337_347_472),
        ("2038-08-15T15:00:50.430+00:00", 2_165_497_250_430),
    ],
)
def test_value_time_keeps_its_last_millisecond(value: str, ms: int) -> None:
    assert parse_time(value, "value_time") == ms


def test_value_time_in_another_offset_is_the_same_instant() -> None:
    assert parse_time("2004-03-15T11:55:47.472+04:00", "value_time") == 1_079_337_347_472


def test_value_time_drops_digits_finer_than_a_millisecond() -> None:
    assert parse_time("2026-12-06T19:14:49.987999Z", "value_time") == 1_796_584_489_987


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_every_millisecond_comes_back_as_written(ms: int) -> None:
    written = (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    assert parse_time(written, "value_time") == ms


@pytest.mark.parametrize("value", ["2026-12-06T19:14:49.987", "not a time", ""])
def test_value_time_without_an_offset_or_unreadable_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="value_time"):
        parse_time(value, "value_time")
