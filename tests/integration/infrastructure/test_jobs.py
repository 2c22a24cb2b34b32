"""Scheduled jobs run under database leases: one replica at a time, renewed sparingly."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.db import utcnow
from gateway.jobs import Jobs
from gateway.leases import lease_t
from gateway.messaging.outbox import OutboxMessage, OutboxRepository
from tests.support.commits import commits_on_this_thread


class Time:
    """The wall clock and the monotonic one of a replica, moved together when told."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.start = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


def _expiry(engine: Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.select(lease_t.c.expires_at).where(lease_t.c.name == name)).scalar()


def test_a_job_runs_on_one_replica_and_renews_its_lease_at_half_time(engine: Engine) -> None:
    settings, clock = Settings(), Time()
    one, other = (
        Jobs(settings, engine, clock=clock.now, monotonic=clock.monotonic) for _ in range(2)
    )
    runs: list[str] = []
    ttl = timedelta(seconds=1)
    first = one._leased("t.job", ttl, lambda: runs.append("one"))
    second = other._leased("t.job", ttl, lambda: runs.append("other"))

    first()  # takes the lease
    taken = _expiry(engine, "t.job")
    with commits_on_this_thread(engine) as commits:
        first()  # well within its first half: runs without touching the database
        first()
    assert runs == ["one"] * 3
    assert commits == []
    assert _expiry(engine, "t.job") == taken

    second()  # held by the other replica: does not run
    assert runs == ["one"] * 3

    clock.advance(0.55)  # past half its time: the next run renews it
    first()
    assert runs == ["one"] * 4
    assert _expiry(engine, "t.job") > taken  # type: ignore[operator]

    clock.advance(0.9)  # the holder stopped (killed); its renewed lease lasts to 1.55 s
    second()
    assert runs == ["one"] * 4
    clock.advance(0.2)  # once it has expired, the other takes it
    second()
    assert runs == ["one"] * 4 + ["other"]
    first()  # and the first no longer runs: it must renew, and cannot
    assert runs == ["one"] * 4 + ["other"]


def test_a_sole_sqlite_server_sends_at_once_what_a_killed_run_had_claimed(
    sqlite_url: str,
) -> None:
    from tests.support.databases import migrated_engine

    engine = migrated_engine(sqlite_url)
    lease, now = timedelta(seconds=30), utcnow()
    with engine.begin() as conn:  # queued and claimed, then the process was killed
        OutboxRepository(conn, claim_for=lease).add("webhook.test", b"{}", event_id="e1", now=now)
    sent: list[str] = []
    delivered = threading.Event()

    def send(message: OutboxMessage) -> None:
        sent.append(message.event_id)
        delivered.set()

    # The clock stands still at the claim: only the release at start can let the row go.
    jobs = Jobs(Settings(), engine, senders={"webhook.test": send}, clock=lambda: now)
    jobs.start()
    try:
        assert delivered.wait(10)
    finally:
        jobs.stop()
        engine.dispose()
    assert sent == ["e1"]  # by the dispatch job, though its claim has not expired
