"""How the proof-of-collateral benchmark takes a checkpoint's lag
(``ops/bench/collateral_writes.py``): per transfer, from its commit to the first checkpoint
seen at or after it that includes it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from collateral_writes import lag_quantiles  # noqa: E402


def test_a_transfer_waits_for_the_first_checkpoint_that_includes_it() -> None:
    # The log held 10 entries; transfers 0 and 1 committed at 1.0 and 1.1.
    seen = [(11, 1.05), (12, 1.3)]
    p50, p95 = lag_quantiles([1.0, 1.1], seen, base=10)
    # Transfer 0 is in the checkpoint of 11 (50 ms), transfer 1 only in that of 12 (200 ms).
    assert (p50, p95) == pytest.approx((200.0, 200.0))


def test_a_checkpoint_seen_before_the_commit_does_not_count() -> None:
    # A checkpoint of size 12 at 0.9 (the size reached by other writes) predates the commit.
    p50, _ = lag_quantiles([1.0], [(12, 0.9), (12, 1.25)], base=10)
    assert p50 == pytest.approx(250.0)


def test_the_quantiles_are_ranks_of_the_sorted_lags() -> None:
    committed = [float(k) for k in range(20)]
    seen = [(k + 1, k + (k + 1) / 1000) for k in range(20)]  # transfer k waits k + 1 ms
    p50, p95 = lag_quantiles(committed, seen, base=0)
    assert (p50, p95) == pytest.approx((11.0, 20.0))
