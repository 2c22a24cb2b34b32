"""How a job that fails at every run while the chain node is down reaches the log: the first
failure with its traceback, then a line every 30 s at most, then one line when it recovers. On
a node that does not answer (nothing listens on its port), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.jobs import Jobs
from gateway.messaging.serving import free_port
from gateway.stablecoin.chain import StablecoinChain


class Time:
    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return datetime(2026, 6, 1, 8, 0, tzinfo=UTC) + timedelta(seconds=self.seconds)


def test_a_job_failing_at_every_run_logs_one_traceback_then_a_line_every_30_s(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Time()
    jobs = Jobs(Settings(), engine, clock=clock.now, monotonic=clock.monotonic)
    node = StablecoinChain.connect(f"http://127.0.0.1:{free_port()}", "0x" + "11" * 20)
    failing: list[type[Exception] | None] = []

    def job() -> None:
        now = failing[-1] if failing else None
        if now is RuntimeError:
            raise RuntimeError("another kind of failure")
        if now is ConnectionError:
            node.block_number()

    run = jobs._leased("t.chain", timedelta(seconds=60), job)

    def runs(count: int) -> list[tuple[str, str, bool]]:
        caplog.clear()
        for _ in range(count):
            run()
            clock.seconds += 0.5
        return [
            (r.levelname, r.getMessage(), r.exc_info is not None)
            for r in caplog.records
            if r.name == "gateway.jobs"
        ]

    caplog.set_level(logging.INFO, logger="gateway.jobs")
    assert runs(3) == []
    failing.append(ConnectionError)
    assert runs(20) == [("ERROR", "job t.chain failed", True)]  # 10 s of failures
    [(level, summary, traceback)] = runs(60)  # 30 s more
    assert (level, traceback) == ("ERROR", False)
    assert summary.startswith("job t.chain still failing: 60 more failures in 30 s, 61 since")
    assert "eth_blockNumber" in summary  # the last failure's reason
    assert runs(40) == []  # 20 s more: the next line is due 30 s after the last

    failing.append(RuntimeError)
    assert runs(4) == [("ERROR", "job t.chain failed", True)]
    failing.append(None)
    assert runs(4) == [("WARNING", "job t.chain recovered after 4 failures in 2 s", False)]
