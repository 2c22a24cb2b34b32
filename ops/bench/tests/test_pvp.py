"""The PvP benchmark's command line (``ops/bench/pvp.py``): the command lines that
docs/performance.md gives still parse, to the options they name."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "pvp.py"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "performance.md"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pvp", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented() -> list[list[str]]:
    """The arguments of each ``ops/bench/pvp.py`` command line in docs/performance.md's code,
    continuation lines joined and comments dropped."""
    lines, commands, pending = DOCS.read_text().splitlines(), [], ""
    for line in lines:
        text = pending + line.split("#", 1)[0].strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text.startswith(".venv/bin/python ops/bench/pvp.py"):
            commands.append(shlex.split(text)[2:])
    return commands


def test_the_documented_command_lines_still_parse(bench: ModuleType) -> None:
    commands = _documented()
    assert len(commands) >= 3
    for argv in commands:
        bench.command_line().parse_args(argv)


def test_the_options_keep_their_names_and_defaults(bench: ModuleType) -> None:
    args = bench.command_line().parse_args(
        ["--latency-rate", "70", "--seconds", "20", "--dump", "/tmp/pvp.json"]
    )
    assert (args.latency_rate, args.seconds, args.dump) == (70.0, 20.0, Path("/tmp/pvp.json"))
    defaults = bench.command_line().parse_args([])
    assert (defaults.burst, defaults.batched_burst, defaults.seconds) == (1500, 3000, 10.0)
    assert (defaults.db, defaults.replicas, defaults.trades_per_request) == ("sqlite", 1, 50)
    env = bench.command_line().parse_args(
        ["--gateway-env", "A=1", "--gateway-env", "B=2", "--connector-env", "C=3"]
    )
    assert (env.gateway_env, env.connector_env) == (["A=1", "B=2"], ["C=3"])


def test_one_sitting_of_both_kinds_reports_postgresql_as_a_share_of_sqlite(
    bench: ModuleType,
) -> None:
    assert bench.command_line().parse_args(["--db", "both", "--replicas", "2"]).db == "both"
    figures = {
        "unbatched_pvp_per_s": 200.0,
        "batched_pvp_per_s": 1000.0,
        "pg_unbatched_pvp_per_s": 90.0,
        "pg_batched_pvp_per_s": 600.0,
    }
    assert bench.shares(figures) == {
        "pg_unbatched_share_of_sqlite": 0.45,
        "pg_batched_share_of_sqlite": 0.6,
    }
    # One kind alone: nothing to compare.
    assert bench.shares({"pg_unbatched_pvp_per_s": 90.0, "pg_batched_pvp_per_s": 600.0}) == {}
    assert bench.shares({"unbatched_pvp_per_s": 200.0, "batched_pvp_per_s": 1000.0}) == {}
