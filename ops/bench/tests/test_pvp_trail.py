"""When a PvP of the PvP benchmark ended and where its time went (``ops/bench/pvp_trail.py``),
from a trail as the connector logs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from pvp_trail import legs_settled_at, pct, settled_at, steps, timestamp  # noqa: E402

# (direction, peer BIC, message, at): one PvP as the connector logs it.
TRAIL = [
    ("out", "NBKZKZKAXXX", "pacs.009.001.08", 10.000),
    ("out", "CBAUAEAA", "pacs.009.001.08", 10.001),
    ("in", "CBAUAEAA", "pacs.002.001.10", 10.002),  # the AED lock
    ("in", "NBKZKZKAXXX", "pacs.002.001.10", 10.010),  # the DT lock
    ("out", "NBKZKZKAXXX", "pacs.002.001.10", 10.011),  # the decision, to both
    ("out", "CBAUAEAA", "pacs.002.001.10", 10.011),
    ("in", "CBAUAEAA", "pacs.002.001.10", 10.012),  # the AED leg settled
    ("in", "NBKZKZKAXXX", "pacs.002.001.10", 10.025),  # the gateway's ACSC, received
]


def test_a_pvp_ends_when_its_later_leg_settled_not_when_the_connector_hears_of_it() -> None:
    assert legs_settled_at(TRAIL, dt_settled=10.020) == 10.020
    # The DT leg first: the AED leg's settlement is the end.
    assert legs_settled_at(TRAIL, dt_settled=10.005) == 10.012
    # The connector's record of the gateway's ACSC comes later still.
    assert settled_at(TRAIL) == 10.025


def test_the_time_goes_to_the_trade_then_per_network_to_its_lock_and_its_settlement() -> None:
    split = steps(TRAIL, t0=9.990)
    assert list(split) == [
        "trade -> pacs.009s",
        "CBAUAEAA pacs.009 -> ACSP",
        "CBAUAEAA decision -> ACSC",
        "NBKZKZKAXXX pacs.009 -> ACSP",
        "NBKZKZKAXXX decision -> ACSC",
    ]
    expected = [10.0, 1.0, 1.0, 10.0, 14.0]
    assert list(split.values()) == pytest.approx(expected)


def test_a_quantile_is_a_rank_of_the_sorted_values_and_never_past_the_last() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert pct(ordered, 0.99) == 100.0
    assert pct(ordered, 0.5) == 51.0
    assert pct([3.0, 7.0], 0.99) == 7.0


def test_times_in_the_logs_read_the_same_with_z_or_an_offset() -> None:
    assert timestamp("2026-01-02T03:04:05.5Z") == timestamp("2026-01-02T03:04:05.500+00:00")
    assert timestamp("2026-01-02T03:04:05Z") - timestamp("2026-01-02T03:04:04Z") == 1.0
