"""The transactional outbox with the ledger: written and rolled back with the ledger change,
delivered at least once with backoff, never twice, retried when a dispatcher's lease expires."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.ledger import service
from gateway.ledger.errors import InsufficientFunds
from gateway.ledger.model import Issue, MakeTransfer, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.outbox import (
    OutboxDispatcher,
    OutboxMessage,
    OutboxRepository,
    backoff,
    outbox_t,
)

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
TOPIC = "ledger.transfer"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """A sender that fails its first ``failures`` calls, then records what it delivers."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.delivered: list[str] = []
        self.mutex = threading.Lock()

    def __call__(self, msg: OutboxMessage) -> None:
        with self.mutex:
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise ConnectionError("receiver down")
            self.delivered.append(msg.event_id)


class Crash(BaseException):
    """Not an Exception: the dispatcher does not catch it, like a process dying mid-delivery."""


def rows(engine: Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(outbox_t.select().order_by(outbox_t.c.id)))


def queue(engine: Engine, *event_ids: str) -> None:
    uow = LedgerUnitOfWork(engine)
    with uow:
        for e in event_ids:
            uow.outbox.add(TOPIC, e.encode(), event_id=e, now=T0)
        uow.commit()


@pytest.fixture
def funded(engine: Engine) -> Engine:
    service.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id="alice", kind=WalletKind.PARTICIPANT, owner="Alice"),
            OpenWallet(id="bob", kind=WalletKind.PARTICIPANT, owner="Bob"),
            Issue(id="i1", wallet_id="alice", amount=100),
        ],
        now=T0,
    )
    return engine


def test_outbox_row_commits_with_the_ledger_change(funded: Engine) -> None:
    uow = LedgerUnitOfWork(funded)
    with uow:
        service.execute(
            uow,
            [MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=10)],
            T0,
        )
        uow.outbox.add(TOPIC, b"t1", event_id="evt-t1", now=T0)
        uow.commit()
    assert [r.event_id for r in rows(funded)] == ["evt-t1"]
    assert service.get_wallet(LedgerUnitOfWork(funded), "bob").posted == 10


def test_outbox_row_disappears_when_the_ledger_change_fails(funded: Engine) -> None:
    uow = LedgerUnitOfWork(funded)

    def attempt() -> None:
        with uow:
            uow.outbox.add(TOPIC, b"t1", event_id="evt-t1", now=T0)
            service.execute(
                uow,
                [
                    MakeTransfer(
                        id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=101
                    )
                ],
                T0,
            )
            uow.commit()

    with pytest.raises(InsufficientFunds):
        attempt()
    assert rows(funded) == []


def test_outbox_row_and_ledger_change_roll_back_together(funded: Engine) -> None:
    uow = LedgerUnitOfWork(funded)
    with uow:
        service.execute(
            uow,
            [MakeTransfer(id="t1", debit_wallet_id="alice", credit_wallet_id="bob", amount=10)],
            T0,
        )
        uow.outbox.add(TOPIC, b"t1", event_id="evt-t1", now=T0)
        # leaving without commit() rolls back
    assert rows(funded) == []
    assert service.get_wallet(LedgerUnitOfWork(funded), "bob").posted == 0
    assert service.check_invariants(LedgerUnitOfWork(funded)).ok


def test_dispatcher_delivers_once(engine: Engine) -> None:
    queue(engine, "e1", "e2")
    sender = Recorder()
    dispatcher = OutboxDispatcher(engine, {TOPIC: sender}, clock=Clock())
    assert dispatcher.run_once() == 2
    assert dispatcher.run_once() == 0
    assert sender.delivered == ["e1", "e2"]
    assert all(r.sent_at == T0 and r.attempts == 1 and r.locked_until is None for r in rows(engine))


def test_dispatcher_ignores_topics_it_has_no_sender_for(engine: Engine) -> None:
    queue(engine, "e1")
    assert OutboxDispatcher(engine, {"other": Recorder()}, clock=Clock()).run_once() == 0
    assert rows(engine)[0].sent_at is None


def test_failing_sender_is_retried_with_backoff(engine: Engine) -> None:
    queue(engine, "e1")
    clock = Clock()
    sender = Recorder(failures=2)
    dispatcher = OutboxDispatcher(engine, {TOPIC: sender}, clock=clock)

    assert dispatcher.run_once() == 0
    row = rows(engine)[0]
    assert (row.attempts, row.sent_at, row.locked_until) == (1, None, None)
    assert row.available_at == T0 + backoff(1)
    assert "receiver down" in row.last_error

    assert dispatcher.run_once() == 0  # not due yet: the sender is not called
    assert sender.calls == 1

    clock.now = T0 + backoff(1)
    assert dispatcher.run_once() == 0
    assert rows(engine)[0].available_at == clock.now + backoff(2)
    assert backoff(2) > backoff(1)

    clock.now += backoff(2)
    assert dispatcher.run_once() == 1
    assert sender.calls == 3
    assert sender.delivered == ["e1"]
    assert rows(engine)[0].attempts == 3
    clock.now += timedelta(hours=1)
    assert dispatcher.run_once() == 0


def test_lease_expiry_lets_another_dispatcher_retry(engine: Engine) -> None:
    queue(engine, "e1")
    clock = Clock()
    lease = timedelta(seconds=30)

    def dies(msg: OutboxMessage) -> None:
        raise Crash

    first = OutboxDispatcher(engine, {TOPIC: dies}, lease=lease, clock=clock)
    with pytest.raises(Crash):
        first.run_once()
    assert rows(engine)[0].locked_until == T0 + lease

    sender = Recorder()
    second = OutboxDispatcher(engine, {TOPIC: sender}, lease=lease, clock=clock)
    clock.now = T0 + lease - timedelta(seconds=1)
    assert second.run_once() == 0  # the lease still holds
    clock.now = T0 + lease
    assert second.run_once() == 1
    assert sender.delivered == ["e1"]


def test_a_sole_dispatcher_restarting_releases_the_claims_of_the_run_that_died(
    engine: Engine,
) -> None:
    queue(engine, "e1", "e2")
    with LedgerUnitOfWork(engine) as uow:
        uow.outbox.add("other.topic", b"x", event_id="o1", now=T0)
        uow.commit()
    clock = Clock()

    def dies(msg: OutboxMessage) -> None:
        raise Crash

    with pytest.raises(Crash):
        OutboxDispatcher(engine, {TOPIC: dies, "other.topic": dies}, clock=clock).run_once()
    assert all(r.locked_until is not None for r in rows(engine) if r.event_id in ("e1", "e2"))

    sender = Recorder()
    restarted = OutboxDispatcher(engine, {TOPIC: sender}, clock=clock)
    assert restarted.release_leases() == 2  # its own topic only
    assert restarted.run_once() == 2  # at once, not after the lease
    assert sorted(sender.delivered) == ["e1", "e2"]
    assert {r.event_id: r.locked_until is None for r in rows(engine)}["o1"] is False


def test_concurrent_dispatchers_deliver_each_message_once(engine: Engine) -> None:
    event_ids = [f"e{i}" for i in range(40)]
    queue(engine, *event_ids)
    sender = Recorder()
    clock = Clock()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        dispatcher = OutboxDispatcher(engine, {TOPIC: sender}, batch=5, clock=clock)
        barrier.wait()
        try:
            while dispatcher.run_once():
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    # A dispatcher may stop early when others hold the rest; one more pass finishes the queue.
    OutboxDispatcher(engine, {TOPIC: sender}, clock=clock).run_once()
    assert sorted(sender.delivered) == sorted(event_ids)
    assert all(r.sent_at is not None for r in rows(engine))


def _queue_claimed(engine: Engine, lease: timedelta, *event_ids: str) -> list[OutboxMessage]:
    with engine.begin() as conn:
        repo = OutboxRepository(conn, claim_for=lease)
        for e in event_ids:
            repo.add(TOPIC, e.encode(), event_id=e, now=T0)
    return repo.claimed


def test_a_message_queued_claimed_is_sent_by_its_writer_and_no_dispatcher_takes_it(
    engine: Engine,
) -> None:
    clock = Clock()
    lease = timedelta(seconds=30)
    claimed = _queue_claimed(engine, lease, "e1", "e2")
    assert [m.event_id for m in claimed] == ["e1", "e2"]
    assert [m.payload for m in claimed] == [b"e1", b"e2"]
    assert [r.locked_until for r in rows(engine)] == [T0 + lease] * 2
    sender = Recorder()
    dispatcher = OutboxDispatcher(engine, {TOPIC: sender}, lease=lease, clock=clock)
    assert dispatcher.run_once() == 0  # the writer's claim holds
    assert dispatcher.deliver(claimed) == 2
    assert sender.delivered == ["e1", "e2"]
    assert all(r.sent_at == T0 and r.locked_until is None for r in rows(engine))
    clock.now = T0 + lease
    assert dispatcher.run_once() == 0  # delivered: never again


def test_a_claimed_message_whose_writer_died_goes_out_after_the_lease_or_a_restart(
    engine: Engine,
) -> None:
    clock = Clock()
    lease = timedelta(seconds=30)
    _queue_claimed(engine, lease, "e1")  # committed, then the writer died before sending
    sender = Recorder()
    dispatcher = OutboxDispatcher(engine, {TOPIC: sender}, lease=lease, clock=clock)
    clock.now = T0 + lease - timedelta(seconds=1)
    assert dispatcher.run_once() == 0
    clock.now = T0 + lease
    assert dispatcher.run_once() == 1
    _queue_claimed(engine, lease, "e2")
    assert dispatcher.release_leases() == 1  # a sole dispatcher starting up
    assert dispatcher.run_once() == 1
    assert sender.delivered == ["e1", "e2"]


def test_a_claimed_message_the_receiver_refuses_is_retried_with_backoff(engine: Engine) -> None:
    clock = Clock()
    claimed = _queue_claimed(engine, timedelta(seconds=30), "e1")
    sender = Recorder(failures=1)
    dispatcher = OutboxDispatcher(engine, {TOPIC: sender}, clock=clock)
    assert dispatcher.deliver(claimed) == 0
    [row] = rows(engine)
    assert row.locked_until is None and row.attempts == 1
    assert row.available_at == T0 + backoff(1)
    clock.now = row.available_at
    assert dispatcher.run_once() == 1
    assert sender.delivered == ["e1"]


def test_deliveries_recorded_late_share_a_transaction_and_are_never_sent_twice(
    engine: Engine,
) -> None:
    from tests.support.commits import commits_on_this_thread

    clock = Clock()
    lease = timedelta(seconds=30)
    sender = Recorder()
    dispatcher = OutboxDispatcher(
        engine, {TOPIC: sender}, lease=lease, clock=clock, record_within=3600
    )
    with commits_on_this_thread(engine) as commits:
        for e in ("e1", "e2", "e3"):  # one at a time, as replies go out at low rates
            assert dispatcher.deliver(_queue_claimed(engine, lease, e)) == 1
    assert len(commits) == 3  # the three queueing transactions, no recording yet
    assert [r.sent_at for r in rows(engine)] == [None] * 3
    clock.now = T0 + lease  # were their claims to expire meanwhile, none is sent again...
    assert dispatcher.run_once() == 0  # ...as the next poll records them first
    assert sender.delivered == ["e1", "e2", "e3"]
    assert all(r.sent_at == T0 and r.locked_until is None for r in rows(engine))

    # A failure is recorded at once (it ends the claim early, for a retry); what was
    # delivered still waits.
    assert dispatcher.deliver(_queue_claimed(engine, lease, "e4")) == 1
    assert rows(engine)[3].sent_at is None
    sender.failures = 1
    assert dispatcher.deliver(_queue_claimed(engine, lease, "e5")) == 0
    by_event = {r.event_id: r for r in rows(engine)}
    assert by_event["e4"].sent_at is None
    assert by_event["e5"].attempts == 1 and by_event["e5"].locked_until is None
    assert by_event["e5"].sent_at is None

    # At shutdown, what waits is recorded.
    assert dispatcher.deliver(_queue_claimed(engine, lease, "e6")) == 1
    assert dispatcher.record_delivered() == 2
    by_event = {r.event_id: r for r in rows(engine)}
    assert by_event["e4"].sent_at == by_event["e6"].sent_at == T0 + lease


def test_deliveries_recorded_late_are_recorded_once_due_by_whoever_delivers_next(
    engine: Engine,
) -> None:
    lease, seconds = timedelta(seconds=30), [0.0]
    dispatcher = OutboxDispatcher(
        engine,
        {TOPIC: Recorder()},
        lease=lease,
        record_within=0.05,
        monotonic=lambda: seconds[0],
    )
    assert dispatcher.deliver(_queue_claimed(engine, lease, "e1")) == 1
    assert rows(engine)[0].sent_at is None
    seconds[0] += 0.04  # not due yet
    assert dispatcher.deliver(_queue_claimed(engine, lease, "e2")) == 1
    assert [r.sent_at for r in rows(engine)] == [None, None]
    seconds[0] += 0.01  # record_within after the first
    assert dispatcher.deliver(_queue_claimed(engine, lease, "e3")) == 1
    assert all(r.sent_at is not None for r in rows(engine))


def test_claims_are_released_at_start_only_where_the_process_is_the_sole_dispatcher(
    engine: Engine,
) -> None:
    lease = timedelta(seconds=30)
    _queue_claimed(engine, lease, "e1")  # a run killed mid-delivery left it claimed
    dispatcher = OutboxDispatcher(engine, {TOPIC: Recorder()}, lease=lease)
    sole = engine.dialect.name == "sqlite"  # one server per SQLite file; replicas elsewhere
    assert dispatcher.release_leases_at_start() == (1 if sole else 0)
    assert (rows(engine)[0].locked_until is None) == sole
