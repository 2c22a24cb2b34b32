"""How the PvP benchmark splits a process's CPU by thread group (``ops/bench/pvp_usage.py``)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from pvp_usage import busy_by_thread, cpu_by_thread  # noqa: E402

from gateway.threads import start_thread  # noqa: E402


def test_thread_shares_count_the_threads_that_ended_during_the_run() -> None:
    before = {"1": ("main", 1.0), "2": ("unnamed", 0.5), "3": ("unnamed", 0.2)}
    # Thread 3 ended, thread 4 started; the process used 1.3 s meanwhile.
    after = {"1": ("main", 1.5), "2": ("unnamed", 0.9), "4": ("unnamed", 0.1)}
    shares = busy_by_thread(before, after, process_cpu=1.3, seconds=2.0)
    assert shares == "unnamed 25 %, main 25 %, ended 15 %"


def test_shares_under_half_a_percent_are_left_out() -> None:
    before = {"1": ("main", 1.0)}
    after = {"1": ("main", 1.001)}
    assert busy_by_thread(before, after, process_cpu=0.001, seconds=1.0) == "none over 0.5 %"


def test_a_named_thread_is_grouped_without_its_number_and_the_first_thread_is_main() -> None:
    release = threading.Event()
    named = threading.Event()

    def park() -> None:
        named.set()
        release.wait()

    thread = start_thread(park, "bench-probe-7")
    try:
        assert named.wait(10)
        threads = cpu_by_thread(os.getpid())
    finally:
        release.set()
        thread.join()
    assert threads[str(os.getpid())][0] == "main"
    assert threads[str(thread.native_id)][0] == "bench-probe"
    assert all(cpu >= 0 for _, cpu in threads.values())
