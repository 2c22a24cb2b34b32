"""Lanes: the outbox's deliveries to one destination, on threads of their own.

A destination is whatever the far side is for its party: a network (the connector's lanes, by
BIC), the connector or an exchange's webhook endpoint (the gateway's, by host and port). Each
lane has a queue of rows, ``threads`` threads that take rows from it (started with the first
row queued, and ended once nothing has come for ``idle_seconds``: an exchange's webhook host
that stopped receiving keeps no thread; the next row starts them again), and a pooled HTTP
client (made at its first post). A slow or unreachable destination holds up its own lane only:
its threads wait on it, the other lanes go on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.messaging.posting import Poster
from gateway.threads import start_thread

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class LaneSettings:
    threads: int = 1
    """Threads per destination: how many of its rows are delivered at once."""
    timeout: float = 5.0
    """A post's timeout, on the lane's pooled client."""
    max_connections: int = 1
    """Idle connections the lane's client keeps open for its next posts."""
    idle_seconds: float = 60.0
    """A lane thread that has taken nothing for this long ends (:meth:`Lanes.take`)."""


class Lane(Generic[R]):
    """Delivery to one destination: its queue (``None`` stops a thread), its threads, and its
    pooled HTTP client."""

    __slots__ = ("_http", "_lock", "_settings", "dest", "queue", "threads")

    def __init__(self, dest: str, settings: LaneSettings) -> None:
        self.dest = dest
        self.queue: queue.SimpleQueue[R | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self._settings = settings
        self._http: Poster | None = None
        self._lock = threading.Lock()

    @property
    def http(self) -> Poster:
        """The lane's client, shared by its threads and by the threads that deliver its rows
        themselves (made at the first post: lanes whose party posts otherwise never make one)."""
        http = self._http
        if http is None:
            with self._lock:
                if self._http is None:
                    s = self._settings
                    self._http = Poster(timeout=s.timeout, max_connections=s.max_connections)
                http = self._http
        return http

    def idle(self) -> bool:
        """Nothing waits in its queue (its threads may still be delivering)."""
        return self.queue.empty()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


class Lanes(Generic[R]):
    """The lanes of one party's outbox, made on first use. ``work(lane)`` is what each lane
    thread runs; it returns when it takes ``None`` from the lane's queue."""

    def __init__(self, name: str, settings: LaneSettings, work: Callable[[Lane[R]], None]) -> None:
        self.name = name
        self.settings = settings
        self._work = work
        self._lanes: dict[str, Lane[R]] = {}
        self._lock = threading.Lock()

    def get(self, dest: str) -> Lane[R]:
        """The lane of ``dest``; its threads start with the first row :meth:`put` on it."""
        lane = self._lanes.get(dest)
        if lane is None:
            with self._lock:
                lane = self._lanes.get(dest)
                if lane is None:
                    lane = self._lanes[dest] = Lane(dest, self.settings)
        return lane

    def put(self, lane: Lane[R], row: R) -> None:
        """Queue ``row`` on ``lane``, starting its threads if it has none. Under the lock, as
        a thread ends under it (:meth:`take`): a row is never queued on a lane whose last
        thread has just decided that nothing came."""
        with self._lock:
            if not lane.threads:
                for i in range(max(1, self.settings.threads)):
                    name = f"{self.name}-send-{lane.dest}-{i}"
                    lane.threads.append(start_thread(self._work, name, args=(lane,)))
            lane.queue.put(row)

    def take(self, lane: Lane[R]) -> R | None:
        """The next row of ``lane`` for one of its threads; None when the thread is to end:
        the lanes are stopping, or nothing has come for ``idle_seconds`` (the thread is then
        no longer one of the lane's)."""
        while True:
            try:
                return lane.queue.get(timeout=self.settings.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if lane.queue.empty():
                        lane.threads.remove(threading.current_thread())
                        return None

    def stop(self) -> None:
        """Stop every lane's threads once they have delivered what is queued, and close
        their clients."""
        with self._lock:
            lanes, self._lanes = list(self._lanes.values()), {}
            running = {lane.dest: list(lane.threads) for lane in lanes}
            for lane in lanes:
                for _ in lane.threads:
                    lane.queue.put(None)
        for lane in lanes:
            for thread in running[lane.dest]:
                thread.join(timeout=10)
            lane.close()


__all__ = ["Lane", "LaneSettings", "Lanes"]
