"""The CPUs a process runs on (``cpus`` and ``connector.cpus``, ``--cpus``).

Worth setting where several busy processes share few cores, as the gateway and the connector
mock do in the PvP benchmark (docs/performance.md): a process's Python work runs one thread at
a time anyway (the GIL), and kept on one core its threads hand work to each other without
waking another CPU, on warm caches. Unset, the operating system places the threads.
"""

from __future__ import annotations

import contextlib
import os

from gateway.errors import InvalidInput


def parse_cpu_list(spec: str) -> frozenset[int]:
    """A CPU list in the Linux format (``taskset -c``, ``Cpus_allowed_list``): ``"1"``,
    ``"0-3"``, ``"0,2-3"`` -> the CPU numbers. Raises ``ValueError`` for anything else."""
    cpus: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"not a CPU list: {spec!r} (expected e.g. '1', '0-3' or '0,2-3')")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"not a CPU list: {spec!r} ({part} runs backwards)")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int] | set[int]) -> str:
    """The inverse of :func:`parse_cpu_list`: ``{0, 1, 2, 5}`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs) or "none"


def pin_process(spec: str) -> frozenset[int]:
    """Run every thread of this process, and every thread it starts later, on the CPUs of
    ``spec`` only (Linux's CPU affinity, as ``taskset -c``); returns them.

    Raises ``InvalidInput`` for a malformed list, a CPU this process may not use, or a
    platform without CPU affinity; nothing is changed then."""
    try:
        cpus = parse_cpu_list(spec)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if not hasattr(os, "sched_setaffinity"):
        raise InvalidInput("choosing the CPUs a process runs on needs Linux (sched_setaffinity)")
    allowed = frozenset(os.sched_getaffinity(0))
    if not cpus <= allowed:
        raise InvalidInput(
            f"cannot run on CPUs {format_cpu_list(cpus)}: this process may use "
            f"{format_cpu_list(allowed)}"
        )
    # Threads inherit the affinity of the thread that starts them: set the calling thread's
    # first, then move those that already exist (a library's, a pool's) one by one.
    os.sched_setaffinity(0, cpus)
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), cpus)
    return cpus


__all__ = ["format_cpu_list", "parse_cpu_list", "pin_process"]
