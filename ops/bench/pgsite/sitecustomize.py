"""Started by Python in each process whose PYTHONPATH leads here (the benchmarks' product
processes, ``ops/bench/pgcount.process_env``): counts statements and round trips to
PostgreSQL into a file of its own in the directory named by ``DT_BENCH_PG_COUNTS``."""

import importlib.util
import os
from pathlib import Path

if os.environ.get("DT_BENCH_PG_COUNTS"):
    _spec = importlib.util.spec_from_file_location(
        "dt_bench_pgcount", Path(__file__).resolve().parents[1] / "pgcount.py"
    )
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _module.install_from_env()
