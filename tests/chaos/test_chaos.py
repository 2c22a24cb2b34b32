"""A short whole-system chaos run (``ops/chaos``): two replicas on a fresh PostgreSQL database,
the connector, anvil; a few seconds of mixed load with message faults and a ``kill -9`` of
every process; every invariant of the report holds. ``DT_GATEWAY_TEST_SEED`` replays a seed
(also: ``python -m ops.chaos.run --seed N``)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ops.chaos.run import chaos_run
from tests.support.anvil import require_anvil

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.chain]


def test_a_short_seeded_run_with_every_process_killed_keeps_every_invariant(
    pg_database_factory: Callable[[], str], tmp_path: Path
) -> None:
    require_anvil()
    seed = int(os.environ.get("DT_GATEWAY_TEST_SEED", random.randrange(2**32)))
    print(f"chaos seed {seed} (DT_GATEWAY_TEST_SEED={seed} or ops.chaos.run --seed {seed})")
    report = chaos_run(
        seed,
        duration=8.0,
        ops=60,
        workdir=tmp_path / "chaos",
        settle_seconds=45.0,
        database_url=pg_database_factory(),
    )
    killed = {kill["victim"] for kill in report["kills"]}
    assert killed == {"replica-1", "replica-2", "connector", "anvil"}, report["kills"]
    assert sum(report["load"]["done"].values()) > 0, report["load"]
    broken = {name: check for name, check in report["invariants"].items() if not check["ok"]}
    assert not broken, f"seed {seed}, logs in {tmp_path}: " + json.dumps(broken, default=str)
