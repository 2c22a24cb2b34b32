"""Whole-system chaos run: two gateway replicas on one fresh PostgreSQL database behind a load
balancer, the connector mock with its simulated AED bank, anvil with the stablecoin contract,
the collateral log; a bounded, seeded mix of PvPs, mints, redemptions and ledger transfers and
locks; the connector's message faults and ``kill -9`` of every process at seeded moments; then
the system is left to settle and the invariants are checked (docs/operations.md, "Chaos runs").

    .venv/bin/python -m ops.chaos.run [--seed N] [--duration S] [--ops N] [--workers N]
        [--pg-admin-url URL] [--workdir DIR] [--keep]

Prints the seed first (``--seed`` replays the same operations, faults and kill schedule), one
line per invariant, and ends with one JSON line, the report. Exits 1 when an invariant broke
(the processes' logs stay in the work directory), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.chaos import faults, invariants
from ops.chaos.load import Clients, Record, drive, plan
from ops.chaos.system import HOLDERS, System, create_database, drop_database

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def chaos_run(
    seed: int,
    *,
    duration: float,
    ops: int,
    workdir: Path,
    workers: int = 3,
    settle_seconds: float = 60.0,
    pg_admin_url: str = PG_ADMIN_URL,
    database_url: str | None = None,
    out: Any = sys.stdout,
) -> dict[str, Any]:
    """One run; the report (``report["ok"]``: every invariant held). The gateway's database
    is ``database_url`` (empty) or else one made for the run and dropped after it."""
    rng = random.Random(seed)
    began = time.monotonic()
    database = database_url or create_database(pg_admin_url)
    system = System(workdir, database)
    try:
        system.start()
        faults.arm(system)
        operations = plan(rng, ops, HOLDERS)
        kills = faults.schedule(rng, sorted(system.processes), duration)
        print(f"up in {time.monotonic() - began:.1f} s {system.timings}", file=out)
        print(f"{ops} operations over {duration:.0f} s; kills:", file=out)
        for kill in kills:
            print(f"  {kill.at:5.1f} s  {kill.victim} (down {kill.down:.1f} s)", file=out)
        t0 = time.monotonic()
        record = Record()
        clients = Clients(system, seed, record, deadline=t0 + duration + settle_seconds)
        chaos = faults.Chaos(system, kills)
        chaos.start(t0)
        drive(clients, operations, workers, t0, duration)
        load_seconds = time.monotonic() - t0
        chaos.stop()
        faults.disarm(system)
        waiting = invariants.settle(system, clients, record, settle_seconds)
        truth = invariants.Truth(system, clients)
        checks = {name: check(truth, record) for name, check in invariants.CHECKS.items()}
        checks["no_server_errors"] = invariants.no_server_errors(record, chaos.done)
        checks["settled"] = {"ok": not waiting, "waiting": waiting}
        checks["restarts"] = {"ok": not chaos.errors, "errors": chaos.errors}
        checks["clients"] = {"ok": not record.client_errors, "errors": record.client_errors[:10]}
        report = {
            "seed": seed,
            "ok": all(c["ok"] for c in checks.values()),
            "invariants": checks,
            "load": {
                "planned": ops,
                "done": dict(record.done),
                "seconds": round(load_seconds, 1),
                "refused": dict(record.refused),
                "unresolved": record.unresolved[:20],
                "dropped_connections": record.dropped_connections,
            },
            "kills": chaos.done,
            "refused_starts": chaos.refusals,
            "anvil_lost_mempool": system.anvil.lost_mempool,
            "seconds": round(time.monotonic() - began, 1),
            "startup": system.timings,
            "workdir": str(workdir),
        }
        return report
    finally:
        system.stop()
        if database_url is None:
            drop_database(pg_admin_url, database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="replay this run (default: a random seed)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--ops", type=int, default=2000, help="operations at most")
    parser.add_argument("--workers", type=int, default=4, help="client threads")
    parser.add_argument("--settle", type=float, default=90.0, help="seconds to settle at most")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--workdir", help="where logs and databases go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory on success")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"chaos seed {seed} (--seed {seed} replays it)", flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"dtg-chaos-{seed}-"))
    report = chaos_run(
        seed,
        duration=args.duration,
        ops=args.ops,
        workdir=workdir,
        workers=args.workers,
        settle_seconds=args.settle,
        pg_admin_url=args.pg_admin_url,
    )
    for refusal in report["refused_starts"]:
        print(f"refused start: {refusal['victim']} at {refusal['at']} s: {refusal['said']}")
    for name, check in report["invariants"].items():
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {name}")
    if report["ok"] and not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not report["ok"]:
        print(f"logs: {workdir}")
    print(json.dumps(report, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
