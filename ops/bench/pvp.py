"""PvP benchmark: DT/AED PvPs per second end to end, and latency, between the real processes.

Starts ``dt-gateway connector`` (with its simulated AED bank) and ``dt-gateway serve`` as
subprocesses on SQLite files (durable settings: WAL, FULL durability by group commit), wired as in
``tests/e2e/pvp`` (whose harness this reuses), then:

- unbatched capacity: a burst of trades (``POST /v1/trades``, several submitters); PvPs/s =
  PvPs / (last leg settled - first trade submitted);
- latency at half that rate: trades submitted open loop at a steady rate; per PvP, from the
  trade request to both legs settled, each as its own ledger recorded it: the DT leg in the
  gateway's settling transaction (the leg's time in ``GET /v1/pvp/{id}``), the AED leg in the
  simulated bank's (its ACSC in the connector's log, written in that transaction); p50 / p99.
  Also the same to the connector's record of the gateway's ACSC (the settlement confirmed to
  the orchestrator, one hop more), and the split by step from the connector's message log
  (the trade to its pacs.009s; per network, its pacs.009 to its lock and the decision to its
  settlement);
- batched capacity: the connector restarted with ``batch_max`` > 1, so the pacs.009 to each
  network carry many transactions (and the gateway locks them in one ledger batch).

Completion is detected from balances (the receivers' totals), so polling adds no per-PvP
load while the clock runs. Each process runs on a core of its own (the gateway on the first
CPU, the connector on the second: ``cpus``, ``connector.cpus``), as each would on its own
machine; ``--no-pin`` lets the operating system place them.

``--db postgresql`` runs both processes on PostgreSQL instead, each on a fresh database created
and dropped here and analyzed after the warm-up, as autovacuum analyzes a running system's
tables (``--cold``: not analyzed), and prints per PvP the statements and round trips of each
process, counted in its driver (``ops/bench/pgcount.py``), and the CPU of their PostgreSQL
backends (``ops/bench/pgmeter.py``). With ``--replicas N`` it ends with an unbatched burst through N
gateway replicas on the one database, behind a TCP balancer (``ops/bench/replicas.py``), and
the conservation check after it. ``--db both`` runs SQLite, then PostgreSQL, in one sitting
and its JSON line carries both sets of figures and PostgreSQL's capacity as a share of
SQLite's (``pg_unbatched_share_of_sqlite``, ``pg_batched_share_of_sqlite``). Usage:

    .venv/bin/python ops/bench/pvp.py [--burst N] [--batched-burst N] [--seconds S]
        [--latency-rate R] [--warm-up N] [--no-pin] [--db sqlite|postgresql|both] [--cold]
        [--replicas N] [--pg-admin-url URL]

The last line is one JSON object.

This module reads the command line, runs the phases in order and writes the JSON line; the
parts live beside it: ``pvp_processes`` (starting the two processes), ``pvp_load`` (the trades
and the wait for them), ``pvp_phases`` (the capacity and latency runs and their printed
figures), ``pvp_trail`` (when each PvP settled and where its time went) and ``pvp_usage``
(CPU by process and thread, slow fsyncs, the machine reference).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgcount  # noqa: E402
import pvp_processes  # noqa: E402
from pgmeter import PgMeter  # noqa: E402
from pvp_load import AED, KZT, Submitter  # noqa: E402
from pvp_phases import run_burst, run_latency  # noqa: E402
from pvp_usage import machine_reference  # noqa: E402
from replicas import Replicas  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def command_line() -> argparse.ArgumentParser:
    """The command line (docs/performance.md names its options: keep them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=1500)
    parser.add_argument("--batched-burst", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="PvPs/s offered in the latency run (default: half the unbatched rate measured)",
    )
    parser.add_argument("--batch-max", type=int, default=100)
    parser.add_argument(
        "--trades-per-request",
        type=int,
        default=50,
        help="capacity runs submit trades through POST /v1/trades/bulk in chunks of this size "
        "(1: one POST /v1/trades each); the latency run always posts one trade at a time",
    )
    parser.add_argument(
        "--senders", type=int, help="the connector's senders_per_network (default: its own)"
    )
    parser.add_argument(
        "--connector-db", help="the connector's database URL (default: a SQLite file)"
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the gateway process (repeatable), e.g. "
        "DT_GATEWAY_PVP__RECEPTION_THREADS=2",
    )
    parser.add_argument(
        "--connector-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the connector process (repeatable)",
    )
    parser.add_argument(
        "--dump",
        type=Path,
        help="write each latency-run PvP's trade time, DT settlement time and message trail to "
        "this JSON file",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases and logs (deleted on success)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the operating system place both processes (default: the gateway on the "
        "first CPU this process may use, the connector on the second, when there are two)",
    )
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql", "both"),
        default="sqlite",
        help="both processes on SQLite files, or each on a fresh PostgreSQL database, or "
        "both kinds one after the other (one JSON line with both figures and PostgreSQL's "
        "share of SQLite's capacity)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="with --db postgresql (or both): after the runs with one gateway, an unbatched "
        "burst with this many gateway replicas on the one database, behind a TCP balancer "
        "that is the connector's endpoint for the gateway from the start",
    )
    parser.add_argument(
        "--warm-up", type=int, default=1000, help="PvPs run before the measured runs"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="with --db postgresql (or both): no ANALYZE after the warm-up, so the runs keep "
        "the plans made while the fresh databases' tables were nearly empty (see "
        "docs/performance.md)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN,
        help="with --db postgresql (or both): a database URL of the server, allowed to create "
        "databases",
    )
    return parser


def measure(args: argparse.Namespace, db: str) -> dict[str, float]:
    """The runs on one database kind (``sqlite`` or ``postgresql``): their figures, under
    ``pg_`` names for PostgreSQL."""
    tmp = Path(tempfile.mkdtemp(prefix="dtgw-bench-pvp-"))
    pg = PgMeter(args.pg_admin_url, tmp / "pg-counts") if db == "postgresql" else None
    urls: dict[str, str] = {}
    counting: dict[str, str] = {}
    if pg is not None:
        urls = pg.create()
        pg.counts.mkdir()
        counting = pgcount.process_env(pg.counts)
    world = pvp_processes.start(
        tmp,
        cpus=pvp_processes.pinned_cpus(args.no_pin),
        urls=urls,
        counting=counting,
        senders=args.senders,
        connector_db=args.connector_db,
        gateway_env=args.gateway_env,
        connector_env=args.connector_env,
    )
    total = args.burst * 3 + args.batched_burst + 100_000
    world.setup(dt=total * KZT * 2, aed=total * AED * 2)
    replicas = Replicas(world, args.replicas) if pg is not None and args.replicas > 1 else None
    both: float | None = None
    try:
        if replicas is not None:
            replicas.front()
        sub = Submitter(world.connector.url, world.admin_token)
        run_burst(world, sub, args.warm_up, "warm-up")
        if pg is not None and not args.cold:
            pg.analyze()
        chunk = args.trades_per_request
        unbatched = run_burst(world, sub, args.burst, "unbatched", chunk, pg)
        time.sleep(3)  # the latency run starts from a quiet system, not the burst's tail
        rate = args.latency_rate or unbatched / 2
        p50, p99, per_pvp = run_latency(world, sub, rate, args.seconds, args.dump, pg)
        world.connector.kill()
        world.connector.start(
            {
                "DT_GATEWAY_CONNECTOR__BATCH_MAX": str(args.batch_max),
                "DT_GATEWAY_CONNECTOR__BATCH_LINGER_MS": "5",
            }
        )
        batched = run_burst(
            world, sub, args.batched_burst, f"batched (batch_max {args.batch_max})", chunk, pg
        )
        if replicas is not None:
            replicas.add()
            label = f"unbatched, {args.replicas} gateway replicas"
            both = run_burst(world, sub, args.burst, label, chunk, pg, replicas)
        inv, sim = world.invariants(), world.sim_check()
        if not (inv["ok"] and sim["ok"]):
            raise SystemExit(f"conservation failed: {inv} {sim}")
        print("conservation: gateway ok, connector AED ok")
    except BaseException:
        print(f"databases and logs kept in {world.tmp}", file=sys.stderr)
        raise
    finally:
        world.close()
        if replicas is not None:
            replicas.close()
        if pg is not None and not args.keep:
            pg.drop()
    if args.keep:
        print(f"databases and logs kept in {world.tmp}")
    else:
        shutil.rmtree(world.tmp, ignore_errors=True)
    figures = {
        "unbatched_pvp_per_s": round(unbatched, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "batched_pvp_per_s": round(batched, 1),
    }
    if both is not None:
        figures |= {"replicas": args.replicas, "replicas_unbatched_pvp_per_s": round(both, 1)}
    if pg is not None:
        # The latency run's (one PvP at a time through each path): per PvP, each process.
        figures |= {f"{k}_per_pvp": round(v, 1) for k, v in per_pvp.items()}
        figures = {f"pg_{k}": v for k, v in figures.items()}
    return figures


def shares(figures: dict[str, float]) -> dict[str, float]:
    """PostgreSQL's capacity as a share of SQLite's, when one sitting measured both."""
    return {
        f"pg_{run}_share_of_sqlite": round(figures[f"pg_{run}_pvp_per_s"] / sqlite, 2)
        for run in ("unbatched", "batched")
        if (sqlite := figures.get(f"{run}_pvp_per_s")) and f"pg_{run}_pvp_per_s" in figures
    }


def main() -> None:
    cli = command_line()
    args = cli.parse_args()
    if args.replicas > 1 and args.db == "sqlite":
        cli.error("--replicas needs --db postgresql or both (one server per SQLite file)")

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"machine reference: {machine_reference():.0f} µs of CPU per pacs.009 signature")
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    figures: dict[str, float] = {}
    for db in kinds:
        if len(kinds) > 1:
            print(f"--- {db}")
        figures |= measure(args, db)
    figures |= shares(figures)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
