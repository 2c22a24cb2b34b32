"""The PvP benchmark's phases (``ops/bench/pvp.py``): a burst for capacity, a steady rate for
latency. Each measures, prints its figures and returns the ones the JSON line carries.

- :func:`run_burst`: PvPs/s = PvPs / (the last one settled - the first trade submitted),
  each party's CPU per PvP (per gateway replica too, when there are several), and the rate
  that CPU in all allows on this machine's CPUs, with the share of it the run reached;
- :func:`run_latency`: trades open loop at a steady rate; per PvP, from the trade request to
  both legs settled (and to the settlement confirmed to the connector), p50 / p99; each
  party's CPU, how busy each was and by which threads, the stalls of their logs' fsyncs, and
  where the time went step by step.

With a :class:`PgMeter` (``--db postgresql``) both also print each party's statements and round
trips per PvP and its backends' CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from pgmeter import PgMeter, cpu_s
from pvp_load import AED, KZT, Submitter, received, wait_settled
from pvp_trail import dt_settled_at, legs_settled_at, pct, settled_at, steps, trail
from pvp_usage import busy_by_thread, cpu_all, cpu_by_thread, party_pids, slow_fsyncs
from replicas import Replicas

from gateway.sqlite.walsync import SLOW_FSYNC_SECONDS
from tests.e2e.pvp.harness import PvPProcesses


def run_burst(
    world: PvPProcesses,
    sub: Submitter,
    n: int,
    label: str,
    chunk: int = 1,
    pg: PgMeter | None = None,
    replicas: Replicas | None = None,
) -> float:
    """``n`` trades as fast as they are taken (``chunk`` per request); PvPs settled per
    second."""
    aed0, kzt0 = received(world)
    pids = party_pids(world, replicas)
    pg0 = pg.snapshot(pids) if pg else None
    cpu0 = cpu_all(pids)
    gateway0 = {pid: cpu_s(pid) for pid in pids["gateway"]}
    t0 = time.time()
    ids = sub.burst(n, deadline_s=300, chunk=chunk)
    t_sub = time.time() - t0
    wait_settled(world, aed0 + n * AED, kzt0 + n * KZT, timeout=600)
    t_end = max(settled_at(trail(world, i)) for i in ids[-50:])  # the last ones settle last
    rate = n / (t_end - t0)
    cpu = {k: (v - cpu0[k]) * 1000 / n for k, v in cpu_all(pids).items()}
    print(f"{label}: {n} PvPs in {t_end - t0:.2f} s (submitted in {t_sub:.2f} s): {rate:.0f}/s")
    print("  CPU ms per PvP: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    if replicas is not None:  # each replica's share: the balancer spread the connections
        split = [(cpu_s(pid) - gateway0[pid]) * 1000 / n for pid in pids["gateway"]]
        print("    by gateway replica: " + ", ".join(f"{ms:.1f}" for ms in split))
    backends = 0.0
    if pg is not None and pg0 is not None:
        backends = pg.report(pg0, pg.snapshot(pids), n)["backends_cpu_ms"]
    print_ceiling(sum(cpu.values()) + backends, rate)
    return rate


def print_ceiling(cpu_ms: float, rate: float) -> None:
    """What the CPU of a PvP in all (the processes', the bench's, PostgreSQL's backends')
    allows on this machine's CPUs, and how much of that the run reached: near 100 %, the
    CPUs, not waits, bound it."""
    cpus = len(os.sched_getaffinity(0))
    ceiling = cpus * 1000 / cpu_ms if cpu_ms > 0 else float("inf")
    print(
        f"  in all {cpu_ms:.1f} ms of CPU per PvP: at most {ceiling:.0f} PvP/s on {cpus} "
        f"CPUs; this run reached {100 * rate / ceiling:.0f} % of that"
    )


def run_latency(
    world: PvPProcesses,
    sub: Submitter,
    rate: float,
    seconds: float,
    dump: Path | None = None,
    pg: PgMeter | None = None,
) -> tuple[float, float, dict[str, float]]:
    """``rate`` trades a second for ``seconds``, one per request; the p50 and p99 ms from a
    trade to both legs settled, and (with ``pg``) each party's PostgreSQL figures per PvP."""
    aed0, kzt0 = received(world)
    groups = party_pids(world)
    pg0 = pg.snapshot(groups) if pg else None
    cpu0 = cpu_all(groups)
    pids = {party: members[0] for party, members in groups.items()}
    threads0 = {name: cpu_by_thread(pid) for name, pid in pids.items()}
    logs = {"gateway": world.gateway.log_path, "connector": world.connector.log_path}
    log_at = {name: log.stat().st_size for name, log in logs.items()}
    started = time.monotonic()
    ids = sub.steady(rate, seconds, deadline_s=60)
    wait_settled(world, aed0 + len(ids) * AED, kzt0 + len(ids) * KZT, timeout=300)
    elapsed = time.monotonic() - started
    used = {k: v - cpu0[k] for k, v in cpu_all(groups).items()}
    pg1 = pg.snapshot(groups) if pg else None
    threads1 = {name: cpu_by_thread(pid) for name, pid in pids.items()}
    cpu = {k: v * 1000 / len(ids) for k, v in used.items()}
    trails = {i: trail(world, i) for i in ids}
    dt_settled = {i: dt_settled_at(world, i) for i in ids}
    lat = sorted((legs_settled_at(trails[i], dt_settled[i]) - sub.sent[i]) * 1000 for i in ids)
    confirmed = sorted((settled_at(trails[i]) - sub.sent[i]) * 1000 for i in ids)
    p50, p99 = statistics.median(lat), pct(lat, 0.99)
    print(
        f"latency at {rate:.0f} PvP/s offered ({len(ids)} PvPs), trade to both legs settled: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"
    )
    print(
        "  to the settlement confirmed to the connector (its log of the gateway's ACSC): "
        f"p50 {statistics.median(confirmed):.1f} ms, p99 {pct(confirmed, 0.99):.1f} ms, "
        f"max {confirmed[-1]:.1f} ms"
    )
    print("  CPU ms per PvP: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    per_pvp = pg.report(pg0, pg1, len(ids)) if pg and pg0 and pg1 else {}
    # A process's Python work runs a thread at a time: its share of one CPU is how busy
    # it was, and what its messages queue behind.
    print(
        "  busy (CPU time / run time, of one CPU): "
        + ", ".join(f"{k} {100 * v / elapsed:.0f} %" for k, v in used.items())
    )
    for name in pids:
        shares = busy_by_thread(threads0[name], threads1[name], used[name], elapsed)
        print(f"    {name} by thread: {shares}")
    slow = {name: slow_fsyncs(log, log_at[name]) for name, log in logs.items()}
    print(
        f"  fsyncs of the log over {SLOW_FSYNC_SECONDS * 1000:.0f} ms (the disk stalled, "
        "every commit of the process waited): "
        + ", ".join(f"{name} {n} (longest {ms:.0f} ms)" for name, (n, ms) in slow.items())
    )
    by_step: dict[str, list[float]] = {}
    for i in ids:
        for name, ms in steps(trails[i], sub.sent[i]).items():
            by_step.setdefault(name, []).append(ms)
    if dump is not None:
        # Each PvP's trade time and its messages as the connector logged them, to look at
        # the tail over the run (one stall or spread out) after the fact.
        dump.write_text(
            json.dumps(
                [
                    {
                        "pvp_id": i,
                        "sent": sub.sent[i],
                        "dt_settled": dt_settled[i],
                        "trail": [list(m) for m in trails[i]],
                    }
                    for i in ids
                ]
            )
        )
    print("  where the time goes, p50 / p99 ms (the connector's log):")
    for name, values in by_step.items():
        values.sort()
        print(f"    {name}: {statistics.median(values):.1f} / {pct(values, 0.99):.1f}")
    return p50, p99, per_pvp
