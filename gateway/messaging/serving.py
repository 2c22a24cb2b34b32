"""Run an ASGI app under uvicorn: as the process's server, or in a background thread (the
demo and the tests)."""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gateway.messaging.httplimits import DEFAULT_LIMITS, HttpLimits, protocol_class


def settle_heap() -> None:
    """Once the server has started: what exists now lives as long as the process (imports,
    the app, schemas, caches), so move it out of the collector's sight.

    Without this, a full collection walked every object of the process: a 110 ms pause,
    every thread stopped, now and then under load (the p99 of a PvP). Young collections
    are also made less frequent (the default threshold, 700 allocations, ran one every few
    requests)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def run_server(
    app: Any, host: str, port: int, log_level: str, limits: HttpLimits = DEFAULT_LIMITS
) -> None:
    """Serve ``app`` in this process until it is stopped (``dt-gateway serve`` and
    ``connector``), with the request-head and body limits of :mod:`gateway.messaging.httplimits`."""
    # Reception, processing and sending are threads sharing the GIL; with the default 5 ms
    # slices a thread back from I/O (holding the SQLite writer, or with a reply to send)
    # waited behind a CPU-bound one at every step: the latency tail of a PvP.
    sys.setswitchinterval(0.0005)
    app.on_startup.append(settle_heap)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # The process's logging (gateway.logcontext, set up by the CLI) formats uvicorn's
        # records too: its own configuration would print them in another format.
        log_config=None,
        access_log=False,
        http=protocol_class(limits),
        timeout_keep_alive=limits.keep_alive,
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    limits: HttpLimits = DEFAULT_LIMITS,
) -> Iterator[str]:
    """Serve ``app`` until the block ends, with the same limits; yields the base URL."""
    port = port or free_port(host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=protocol_class(limits),
        timeout_keep_alive=limits.keep_alive,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


__all__ = ["HttpLimits", "free_port", "run_server", "serve_in_thread"]
