"""The settings the PvP benchmark starts its processes with (``ops/bench/pvp_processes.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from pvp_processes import name_values, pinned_cpus  # noqa: E402


def test_settings_for_a_process_are_name_value_pairs() -> None:
    assert name_values(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        name_values(["A"])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        name_values(["=1"])


def test_no_pin_leaves_both_processes_to_the_operating_system() -> None:
    assert pinned_cpus(no_pin=True) == []
    cpus = pinned_cpus(no_pin=False)
    assert cpus == [] or (len(cpus) == 2 and cpus[0] < cpus[1])
