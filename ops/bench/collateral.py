"""Proof-of-collateral benchmark: the log's append rate, checkpoint lag, serving and proofs,
and the public verifier over a million entries. SQLite file, durable settings.

- ``append_entries_per_s``: entries sequenced into the tree per second, durably (each batch's
  entries, subtree hashes and signed checkpoint in one committed transaction), from a pool of
  200,000;
- ``pool_entries_per_s``: ledger transfers into the segregated wallet per second from 8
  concurrent clients through the group committer, each pooling its entry in its own transaction;
- ``checkpoint_lag_p95_ms``: from a ledger transfer's commit to the commit of the first
  checkpoint that includes it, with the integrator running every ``integrate_seconds`` as the
  job does, under 200 transfers a second;
- ``cosigned_checkpoint_lag_p95_ms``: from a ledger transfer's commit to the moment the checkpoint
  served (as a replica serves it, through its cache) includes it and carries the cosignature of a
  witness on this machine (a ``dt-gateway witness`` process, its state fsynced before it
  answers), with the integrator and the witnessing job at their default periods, under 200
  transfers a second;
- ``checkpoint_rps``: ``GET /collateral/log/checkpoint`` over HTTP (the gateway's app in its own
  process, 8 keep-alive client connections);
- ``inclusion_proof_ms_1m`` / ``consistency_proof_ms_1m``: the server computing one proof (p50 of
  200) over a log of 1,000,000 entries;
- ``verify_full_1m_s``: a fresh verifier over those 1,000,000 entries, from the gateway's tiles
  over HTTP (RPC excluded: the log holds no chain entries);
- ``verify_incremental_s``: the same verifier, with its state file, after 100 new entries;
- ``page_load_ms``: ``GET /collateral`` in headless Chromium (Debian's ``/usr/bin/chromium``
  through Playwright) over a log whose chart holds 1,000 reserve statements, from navigation to
  the end of the page's own in-browser check (inclusion proof and signature); p50 of 20 loads
  after one to warm up. Skipped, with a message, where Chromium is not installed.

Usage: ``.venv/bin/python ops/bench/collateral.py [--entries 1000000] [--seconds 5]
[--only page]``. The last line is one JSON object.

This module reads the command line, runs the parts in order and prints the figures; the parts
live beside it: ``collateral_logs`` (the databases and pooled histories), ``collateral_writes``
(append, pooling and the lags), ``collateral_serving`` (proofs, the served checkpoint and the
verifier) and ``collateral_page`` (the page in Chromium).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from collateral_logs import ORIGIN, collateral_log, drain, engine_at, open_wallets, pool_bodies
from collateral_page import run_page_bench
from collateral_serving import bench_proofs, run_served_bench
from collateral_writes import bench_append, bench_cosigned_lag, bench_pool_and_lag

from gateway.collateral.note import Signer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", choices=["page"], help="run one part only")
    args = ap.parse_args()

    signer = Signer.generate(ORIGIN)
    result: dict[str, float] = {}
    if args.only == "page":
        with tempfile.TemporaryDirectory() as d:
            result.update(run_page_bench(Path(d), signer))
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result["append_entries_per_s"] = bench_append(tmp, signer)
        print(f"append (durable, batches of 5000): {result['append_entries_per_s']:,.0f} entries/s")
        result.update(bench_pool_and_lag(tmp, signer, args.seconds, 200.0))
        print(
            "pool (8 clients, grouped ledger commits):"
            f" {result['pool_entries_per_s']:,.0f} entries/s"
        )
        print(
            f"checkpoint lag at 200 transfers/s: p50 {result['checkpoint_lag_p50_ms']:.0f} ms,"
            f" p95 {result['checkpoint_lag_p95_ms']:.0f} ms"
        )
        result.update(bench_cosigned_lag(tmp, signer, args.seconds, 200.0))
        print(
            "cosigned checkpoint lag at 200 transfers/s, one local witness:"
            f" p50 {result['cosigned_checkpoint_lag_p50_ms']:.0f} ms,"
            f" p95 {result['cosigned_checkpoint_lag_p95_ms']:.0f} ms"
        )

        db = tmp / "big.db"
        engine = engine_at(db)
        open_wallets(engine, 0)
        clog = collateral_log(signer, batch_limit=50_000)
        t0 = time.perf_counter()
        balance = pool_bodies(engine, 0, args.entries)
        drain(engine, clog)
        print(f"built a log of {args.entries:,} entries in {time.perf_counter() - t0:.1f} s")
        result.update(bench_proofs(engine, clog, args.entries))
        print(
            f"proofs at {args.entries:,}: inclusion {result['inclusion_proof_ms_1m']:.2f} ms,"
            f" consistency {result['consistency_proof_ms_1m']:.2f} ms (p50 of 200)"
        )

        result.update(
            run_served_bench(tmp, db, engine, clog, signer, args.entries, balance, args.seconds)
        )
        engine.dispose()
        result.update(run_page_bench(tmp, signer))
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))


if __name__ == "__main__":
    main()
