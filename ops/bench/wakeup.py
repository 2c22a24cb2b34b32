"""What a thread's sleep costs in CPU after it wakes: the same work, run back to back, after a
short sleep, and after a hand-over from another thread.

The work is one step of the PvP path: parse, validate and verify a signed single-transaction
pacs.009 envelope (``gateway.iso20022.parse`` with the sender's certificate). On the shared
2-core VMs this product is measured on, the work costs more CPU when the thread slept just
before (an fsync, a queue, a post's answer): its caches went cold while other work ran. The
cost grows with the time away, and it does so also when the thread never sleeps but spins
on a clock, which keeps the CPU busy with almost no memory of its own: what evicts the
work's code and data is other work on the host (other virtual machines), not the CPU's idle
states. That is why the PvP path is built to wake as few threads per message as it can, and
why one message costs several times more CPU at a low rate than in a burst
(docs/performance.md).

Run: .venv/bin/python ops/bench/wakeup.py [--rounds N]
Prints one line per mode and ends with one JSON line (µs of CPU per step, medians of 5 runs).
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from samples import fx_pacs009

from gateway.iso20022 import build, header_for, parse
from gateway.pvp.keys import generate


def _envelopes(n: int) -> tuple[list[bytes], bytes]:
    identity = generate("bench")
    raws = []
    for i in range(n):
        msg = fx_pacs009(i, valid_for=timedelta(hours=1))
        header = header_for(msg, from_bic="SWHQBEBB", to_bic="CBAUAEAA")
        raws.append(build(msg, header, signer=identity))
    return raws, identity.cert_pem


def _cpu_per_step(steps: list[Callable[[], object]], between: Callable[[], object]) -> float:
    """µs of this thread's CPU per step, ``between`` (a sleep, a hand-over) not counted."""
    spent = 0
    for step in steps:
        between()
        t0 = time.thread_time_ns()
        step()
        spent += time.thread_time_ns() - t0
    return spent / len(steps) / 1000


def _spin(seconds: float) -> None:
    """Busy for ``seconds`` without sleeping (the CPU never idles), touching next to no
    memory."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _handed_over(steps: list[Callable[[], object]]) -> float:
    """The steps run on another thread, each handed over through a queue and waited for:
    the other thread sleeps on the queue between steps, as a reception or lane thread does."""
    inbox: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
    done: queue.SimpleQueue[int] = queue.SimpleQueue()

    def worker() -> None:
        while (step := inbox.get()) is not None:
            t0 = time.thread_time_ns()
            step()
            done.put(time.thread_time_ns() - t0)

    thread = threading.Thread(target=worker)
    thread.start()
    spent = 0
    for step in steps:
        inbox.put(step)
        spent += done.get()
    inbox.put(None)
    thread.join()
    return spent / len(steps) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    raws, cert = _envelopes(args.rounds)
    steps: list[Callable[[], object]] = [partial(parse, raw, cert_pem=cert) for raw in raws]
    for step in steps[:50]:  # warm: schemas compiled, code paths taken
        step()
    modes: dict[str, Callable[[], float]] = {
        "back_to_back": lambda: _cpu_per_step(steps, lambda: None),
        "after_0.5ms_sleep": lambda: _cpu_per_step(steps, lambda: time.sleep(0.0005)),
        "after_1ms_sleep": lambda: _cpu_per_step(steps, lambda: time.sleep(0.001)),
        "after_5ms_sleep": lambda: _cpu_per_step(steps, lambda: time.sleep(0.005)),
        "after_20ms_sleep": lambda: _cpu_per_step(steps, lambda: time.sleep(0.02)),
        "after_5ms_spin": lambda: _cpu_per_step(steps, lambda: _spin(0.005)),
        "handed_to_a_thread": lambda: _handed_over(steps),
    }
    figures: dict[str, float] = {}
    for name, run in modes.items():
        figures[name] = round(statistics.median(run() for _ in range(5)), 1)
        print(f"parse + verify a pacs.009, {name.replace('_', ' '):20s} {figures[name]:8.1f} µs")
    print(json.dumps({"cpu_us_per_step": figures}))


if __name__ == "__main__":
    main()
