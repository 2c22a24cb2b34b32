"""Both processes pinned to chosen CPUs (``cpus``, ``connector.cpus``), as the benchmark runs
them: every thread of each stays there, and PvPs settle as anywhere else."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.pvp.harness import AED_RECEIVER, Process, PvPProcesses


def _thread_cpus(process: Process) -> set[str]:
    assert process.proc is not None
    lists = set()
    for status in Path(f"/proc/{process.proc.pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists


def test_each_process_runs_its_threads_on_its_own_cpus(
    make_world: Callable[..., PvPProcesses],
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    gateway_cpu, connector_cpu = str(cpus[0]), str(cpus[-1])
    world = make_world(
        gateway_settings={"DT_GATEWAY_CPUS": gateway_cpu},
        connector_settings={"DT_GATEWAY_CONNECTOR__CPUS": connector_cpu},
    )
    pvps = [world.trade(kzt=1_000_00 + i, aed=80 + i) for i in range(5)]
    world.wait_all_final(pvps)
    assert all(world.assert_atomic(p) == "COMMIT" for p in pvps)
    assert world.aed(AED_RECEIVER)["available"] == sum(80 + i for i in range(5))
    world.assert_conserved()

    # By now both have started every thread they run (pools, lanes, schedulers, servers).
    assert _thread_cpus(world.gateway) == {gateway_cpu}
    assert _thread_cpus(world.connector) == {connector_cpu}
