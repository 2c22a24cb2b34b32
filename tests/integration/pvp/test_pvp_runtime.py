"""The PvP runtime's threads: a committed outbox message wakes one dispatcher, not all."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy.engine import Engine

from gateway.config import load_settings
from gateway.pvp.runtime import PvPRuntime


def test_each_outbox_notification_wakes_one_dispatcher(engine: Engine, tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        data_dir=str(tmp_path / "data"),
        database={"url": str(engine.url)},
        pvp={"workers": 1, "dispatchers": 4},
    )
    # No timed polls during the test: only notifications wake dispatchers.
    runtime = PvPRuntime(settings, engine, idle=30.0)
    claims: list[str] = []
    lock = threading.Lock()
    drain = runtime.dispatcher.run_once

    def counted() -> int:
        with lock:
            claims.append(threading.current_thread().name)
        return drain()

    runtime.dispatcher.run_once = counted  # type: ignore[method-assign]
    runtime.start()  # notifies once itself
    try:
        deadline = time.monotonic() + 5
        while not claims and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(claims) == 1
        for _ in range(5):
            runtime.notify_outbox()
            time.sleep(0.1)
        # One empty claim per notification; waking all four cost four (and, in a burst, a
        # write transaction each).
        assert len(claims) == 6
        notified_burst = 20
        for _ in range(notified_burst):
            runtime.notify_outbox()
        time.sleep(0.3)
        assert 6 < len(claims) <= 6 + notified_burst
    finally:
        runtime.stop()
