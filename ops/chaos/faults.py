"""What goes wrong during a chaos run: the connector's fault rules on every message it sends
(dropped, duplicated, delayed, reordered; the simulated foreign bank refusing its leg now and
then), and ``kill -9`` of each process at moments drawn from the seeded RNG, each started again
after a short outage on its own state (the replicas and the connector on their databases,
anvil on its chain)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ops.chaos.system import System

FX_NETWORK = "CBAUAEAA"
START_PATIENCE = 60.0
"""Seconds a killed process may take to start again, counting its refused starts."""
MESSAGE_FAULTS: list[dict[str, Any]] = [
    {"kind": "drop", "probability": 0.03},
    {"kind": "duplicate", "probability": 0.03},
    {"kind": "delay", "probability": 0.03, "delay_ms": 400},
    {"kind": "reorder", "probability": 0.02},
    {"kind": "reject", "probability": 0.03, "destination_bic": FX_NETWORK, "reason": "AM04"},
]


def arm(system: System) -> None:
    """Fault rules live in the connector's memory: armed again after each of its restarts."""
    for rule in MESSAGE_FAULTS:
        system.call(system.conn, "POST", "/v1/faults", rule)


def disarm(system: System) -> None:
    system.conn.delete("/v1/faults")


@dataclass(frozen=True)
class Kill:
    at: float
    """Seconds after the load started."""
    victim: str
    down: float
    """Seconds the process stays dead before it is started again."""


def schedule(rng: random.Random, victims: list[str], duration: float) -> list[Kill]:
    """Each process killed at least once, then one more kill per ~15 s of run, at random
    moments of the run's middle (the first and last seconds see none)."""
    chosen = list(victims)
    rng.shuffle(chosen)
    chosen += [rng.choice(victims) for _ in range(int(duration // 15))]
    times = sorted(rng.uniform(0.1 * duration, 0.8 * duration) for _ in chosen)
    return [Kill(t, v, rng.uniform(0.2, 1.5)) for t, v in zip(times, chosen, strict=True)]


@dataclass
class Chaos:
    """Carries out a kill schedule: one thread per process, so that outages of different
    processes may overlap (a replica and anvil down at once) while one process's kills follow
    each other. Every process is killed at least once: a kill that the end of the load
    overtook (restarts take seconds on a busy machine) happens at :meth:`stop`."""

    system: System
    kills: list[Kill]
    done: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    """Starts that failed (the process exited at start) before one succeeded."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, t0: float) -> None:
        victims = sorted({k.victim for k in self.kills})
        for victim in victims:
            mine = [k for k in self.kills if k.victim == victim]
            thread = threading.Thread(target=self._run, args=(mine, t0), name=f"chaos-{victim}")
            self._threads.append(thread)
            thread.start()

    def _run(self, kills: list[Kill], t0: float) -> None:
        killed = False
        for kill in kills:
            if self._stop.wait(max(0.0, t0 + kill.at - time.monotonic())) and killed:
                return
            self._attempt(kill, t0)
            killed = True

    def _attempt(self, kill: Kill, t0: float) -> None:
        try:
            self._kill(kill, t0)
        except Exception as exc:  # reported: a process that will not start again
            with self._lock:
                self.errors.append(f"{kill.victim}: {exc!r}")

    def _kill(self, kill: Kill, t0: float) -> None:
        process = self.system.processes[kill.victim]
        started, wall = time.monotonic(), time.time()
        process.kill()
        time.sleep(kill.down)
        self._start_again(kill.victim, t0)
        if kill.victim == "connector":
            arm(self.system)
        with self._lock:
            self.done.append(
                {
                    "victim": kill.victim,
                    "at": round(started - t0, 2),
                    "down": round(time.monotonic() - started, 2),
                    "wall": wall,
                }
            )

    def _start_again(self, victim: str, t0: float) -> None:
        """Start the process as an orchestrator does: again after a second while it exits
        at start (a replica refuses to start while the chain node is down); each refusal is
        reported. One that will not start within ``START_PATIENCE`` seconds is an error."""
        process = self.system.processes[victim]
        give_up = time.monotonic() + START_PATIENCE
        while True:
            try:
                process.start()
                return
            except AssertionError as exc:
                if time.monotonic() > give_up:
                    raise
                last = [line for line in str(exc).splitlines() if line.strip()][-1:]
                with self._lock:
                    self.refusals.append(
                        {
                            "victim": victim,
                            "at": round(time.monotonic() - t0, 2),
                            "said": (last[0] if last else str(exc))[:300],
                        }
                    )
                time.sleep(1.0)

    def stop(self) -> None:
        """No further kills beyond each process's first; waits for them and their restarts."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
