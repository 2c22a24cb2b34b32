"""The PvP benchmark's own arithmetic (``ops/bench/pvp.py``): where a PvP ends, how each
thread group's CPU share is split, the settings it passes on."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "pvp.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pvp", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_a_pvp_ends_when_its_later_leg_settled_not_when_the_connector_hears_of_it(
    bench: ModuleType,
) -> None:
    assert bench._legs_settled_at(TRAIL, dt_settled=10.020) == 10.020
    # The DT leg first: the AED leg's settlement is the end.
    assert bench._legs_settled_at(TRAIL, dt_settled=10.005) == 10.012
    # The connector's record of the gateway's ACSC comes later still.
    assert bench._settled_at(TRAIL) == 10.025


def test_thread_shares_count_the_threads_that_ended_during_the_run(bench: ModuleType) -> None:
    before = {"1": ("main", 1.0), "2": ("unnamed", 0.5), "3": ("unnamed", 0.2)}
    # Thread 3 ended, thread 4 started; the process used 1.3 s meanwhile.
    after = {"1": ("main", 1.5), "2": ("unnamed", 0.9), "4": ("unnamed", 0.1)}
    shares = bench._busy_by_thread(before, after, process_cpu=1.3, seconds=2.0)
    assert shares == "unnamed 25 %, main 25 %, ended 15 %"


def test_settings_for_a_process_are_name_value_pairs(bench: ModuleType) -> None:
    assert bench._settings(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        bench._settings(["A"])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        bench._settings(["=1"])
