"""Scheduled jobs run under database leases: one replica at a time, renewed sparingly."""

from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.db import utcnow
from gateway.jobs import Jobs
from gateway.leases import lease_t
from gateway.messaging.outbox import OutboxRepository
from tests.support.commits import commits_on_this_thread


def _expiry(engine: Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.select(lease_t.c.expires_at).where(lease_t.c.name == name)).scalar()


def test_a_job_runs_on_one_replica_and_renews_its_lease_at_half_time(engine: Engine) -> None:
    settings = Settings()
    one, other = Jobs(settings, engine), Jobs(settings, engine)
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

    time.sleep(0.55)  # past half its time: the next run renews it
    first()
    assert runs == ["one"] * 4
    assert _expiry(engine, "t.job") > taken  # type: ignore[operator]

    time.sleep(1.1)  # the holder stopped (killed): once the lease expires, the other takes it
    second()
    assert runs == ["one"] * 4 + ["other"]
    first()  # and the first no longer runs: it must renew, and cannot
    assert runs == ["one"] * 4 + ["other"]


def test_a_sole_sqlite_server_sends_at_once_what_a_killed_run_had_claimed(
    sqlite_url: str,
) -> None:
    from tests.conftest import migrated_engine

    engine = migrated_engine(sqlite_url)
    lease = timedelta(seconds=30)
    with engine.begin() as conn:  # queued and claimed, then the process was killed
        OutboxRepository(conn, claim_for=lease).add(
            "webhook.test", b"{}", event_id="e1", now=utcnow()
        )
    sent: list[str] = []
    jobs = Jobs(Settings(), engine, senders={"webhook.test": lambda m: sent.append(m.event_id)})
    jobs.start()
    try:
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        jobs.stop()
        engine.dispose()
    assert sent == ["e1"]  # within the dispatch job's period, not after the lease
