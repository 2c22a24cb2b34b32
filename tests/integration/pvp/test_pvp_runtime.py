"""The PvP runtime's threads: a wake-up of the outbox dispatcher is one claim; who processes
a message that was just stored, and when, and who sends its reply; what a failed transaction
sends."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import load_settings
from gateway.pvp.reception import Reception
from gateway.pvp.runtime import PvPRuntime
from gateway.pvp.store import inbox_t
from tests.support.inprocess_pvp import InProcessPvP, Leg, uetr
from tests.support.waiting import wait_for


@contextmanager
def _transactions_by_thread(engine: Engine, event: str) -> Iterator[list[str]]:
    """The names of the threads on which ``engine`` begins (or commits) a transaction."""
    seen: list[str] = []
    lock = threading.Lock()

    def record(_conn: object) -> None:
        with lock:
            seen.append(threading.current_thread().name)

    sa.event.listen(engine, event, record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, event, record)


def test_each_wake_up_is_one_claim_and_lane_threads_never_claim(
    engine: Engine, tmp_path: Path
) -> None:
    """The outbox dispatcher claims when a commit that queued a message it did not claim wakes
    it, or at its poll: one claim transaction per wake-up while it sleeps, fewer in a burst
    (each claim costs a write transaction). The connector's lane threads only send."""
    settings = load_settings(
        environ={},
        data_dir=str(tmp_path / "data"),
        database={"url": str(engine.url)},
        pvp={"workers": 1, "dispatchers": 4},
    )
    # No timed polls during the test: only wake-ups make the dispatcher claim.
    runtime = PvPRuntime(settings, engine, idle=30.0)
    with _transactions_by_thread(engine, "commit") as committed:

        def claims() -> int:  # each look for due rows is one claim transaction
            return sum(name == "pvp-outbox" for name in list(committed))

        runtime.start()  # its first round claims
        try:
            wait_for(lambda: claims() >= 1, "the first round's claim", interval=0.005)
            assert claims() == 1
            for i in range(5):
                runtime.wake_dispatcher()
                wait_for(lambda i=i: claims() >= 2 + i, "a claim", interval=0.005)  # type: ignore[misc]
                assert claims() == 2 + i
            burst = 20
            for _ in range(burst):
                runtime.wake_dispatcher()
            wait_for(lambda: claims() > 6, "a claim for the burst", interval=0.005)
            assert claims() <= 6 + burst
        finally:
            runtime.stop()
    assert not [name for name in committed if name.startswith("pvp-send-")]


def _inbox_rows(world: InProcessPvP) -> list[sa.Row[tuple[object, ...]]]:
    with world.engine.connect() as conn:
        return list(conn.execute(inbox_t.select()))


def test_at_low_load_a_message_is_applied_in_the_transaction_that_stores_it(
    world: InProcessPvP,
) -> None:
    """One commit before the 202 stores and applies the pacs.009: the leg is locked when the
    answer arrives, and no inbox item was needed (so no worker or later transaction processed
    it); the reception thread sends the ACSP."""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    leg = Leg(uetr(), 250_000)
    assert world.post(world.pacs009(leg)).status_code == 202
    assert world.leg_state(leg.uetr) == "locked"
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    world.connector.wait_status(leg.uetr, "ACSP")
    assert _inbox_rows(world) == []


def test_with_process_on_receipt_off_the_reception_thread_processes_after_the_202(
    world: InProcessPvP,
) -> None:
    """``pvp.process_on_receipt`` off: stored and answered first, then applied in a second
    transaction by the thread that stored it, with no worker woken for it."""
    settings = world.runtime.settings
    world.runtime.settings = settings.model_copy(
        update={"pvp": settings.pvp.model_copy(update={"process_on_receipt": False})}
    )
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    leg = Leg(uetr(), 250_000)
    with _transactions_by_thread(world.engine, "commit") as committed:
        assert world.post(world.pacs009(leg)).status_code == 202
        world.connector.wait_status(leg.uetr, "ACSP")  # sent after the processing's commit
    on_reception = [n for n in committed if n.startswith("pvp-reception-")]
    assert len(on_reception) >= 2  # stored, then processed
    assert not [n for n in committed if n.startswith("pvp-inbox-")]
    [item] = _inbox_rows(world)
    assert item.processed_at is not None


def _refuse(engine: Engine, trigger: str, writes: str, when: str = "TRUE") -> None:
    """``writes`` (``INSERT ON outbox``, ...) fail while ``when`` holds, as a database
    refusing them would."""
    if engine.dialect.name == "sqlite":
        ddl = [
            f"CREATE TRIGGER {trigger} BEFORE {writes} WHEN {when}"
            f" BEGIN SELECT RAISE(ABORT, 'injected: {trigger}'); END"
        ]
    else:
        ddl = [
            f"CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF {when} THEN RAISE EXCEPTION 'injected: {trigger}'; END IF; RETURN NEW; END $$",
            f"CREATE TRIGGER {trigger} BEFORE {writes} FOR EACH ROW EXECUTE FUNCTION {trigger}()",
        ]
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)


def _allow(engine: Engine, trigger: str, writes: str) -> None:
    on = "" if engine.dialect.name == "sqlite" else f" ON {writes.split()[-1]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TRIGGER {trigger}{on}")


def test_a_message_whose_application_fails_on_receipt_stays_stored_and_is_applied_later(
    world: InProcessPvP,
) -> None:
    """The first application fails after it locked the funds, as it queues the ACSP: its
    savepoint takes all of that back (the reply it claimed included), the message stays stored
    with an inbox item, and the next attempt applies it once: one lock, one ACSP."""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    # Queueing a reply fails while no inbox item exists: applying the message in the
    # transaction that stores it fails (after the lock), processing it later does not.
    _refuse(
        world.engine, "test_no_reply", "INSERT ON outbox", "NOT EXISTS (SELECT 1 FROM pvp_inbox)"
    )
    leg = Leg(uetr(), 250_000)
    assert world.post(world.pacs009(leg)).status_code == 202
    world.connector.wait_status(leg.uetr, "ACSP")
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    [item] = _inbox_rows(world)
    assert item.processed_at is not None  # applied from the inbox, the second time
    # A claimed reply of the failed attempt would have been sent before the inbox item was
    # processed, so before this ACSP existed.
    assert [s.status for s in world.connector.statuses(leg.uetr)] == ["ACSP"]


def test_a_reception_whose_transaction_fails_sends_nothing_it_had_queued(
    world: InProcessPvP,
) -> None:
    """Two pacs.009s received together: the first is applied and its ACSP queued (claimed
    for sending); the second cannot lock, and its inbox item cannot be stored either, which
    fails the whole transaction. Nothing of it comes back to be sent (over HTTP: the
    connector gets an error, not the reply of a lock that does not exist); a retry is
    applied once. (On PostgreSQL a leg received and locked in one transaction is written once,
    by its INSERT, at the commit.)"""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    legs = (
        "UPDATE ON pvp_leg"
        if world.engine.dialect.name == "sqlite"
        else "INSERT OR UPDATE ON pvp_leg"
    )
    _refuse(world.engine, "test_no_lock", legs, "NEW.amount = 13 AND NEW.state = 'locked'")
    _refuse(world.engine, "test_no_inbox", "INSERT ON pvp_inbox")
    first, second = Leg(uetr(), 250_000), Leg(uetr(), 13)
    with pytest.raises(Exception, match="injected: test_no_inbox"):
        world.runtime.receive([world.pacs009(first), world.pacs009(second)], process=True)
    assert world.post(world.pacs009(second)).status_code >= 500
    assert world.balance("hsbk-dt") == (1_000_000, 0)
    assert world.connector.statuses(first.uetr) == []
    _allow(world.engine, "test_no_inbox", "INSERT ON pvp_inbox")
    [answer], got = world.runtime.receive([world.pacs009(first)], process=True)
    assert answer.status == 202 and len(got.claimed) == 1
    world.runtime._after_reception(got, True)
    assert [s.status for s in world.connector.statuses(first.uetr)] == ["ACSP"]
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)


def _stored(world: InProcessPvP, *legs: Leg) -> Reception:
    """What a reception that stored the legs' pacs.009s (one each) without applying them
    produced, on this thread."""
    answers, got = world.runtime.receive([world.pacs009(leg) for leg in legs])
    assert [a.status for a in answers] == [202] * len(legs)
    return got


@pytest.mark.parametrize(
    ("count", "may_wait"),
    [
        # Several messages stored in one reception transaction (a backlog) are the workers'
        # to process, in transactions of many, while the reception thread goes back to storing.
        pytest.param(2, True, id="stored-together"),
        # When the other reception threads are all posting replies, the last one must stay
        # free for the connector's posts (gateway.messaging.queues.Batcher): what it stored goes
        # to the workers, even alone, since processing it means posting the reply and waiting.
        pytest.param(1, False, id="may-not-wait"),
    ],
)
def test_what_the_reception_thread_does_not_process_goes_to_the_workers(
    world: InProcessPvP, count: int, may_wait: bool
) -> None:
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    legs = [Leg(uetr(), 1_000) for _ in range(count)]
    got = _stored(world, *legs)
    assert len(got.inbox) == count and got.claimed == []
    with _transactions_by_thread(world.engine, "commit") as committed:
        world.runtime._after_reception(got, may_wait)
        for leg in legs:
            world.connector.wait_status(leg.uetr, "ACSP")
    me = threading.current_thread().name
    assert me not in committed  # nothing processed on the thread that stored them
    assert [n for n in committed if n.startswith("pvp-inbox-")]


def test_one_message_stored_alone_is_processed_by_the_thread_that_stored_it(
    world: InProcessPvP,
) -> None:
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    leg = Leg(uetr(), 1_000)
    got = _stored(world, leg)
    with _transactions_by_thread(world.engine, "commit") as committed:
        world.runtime._after_reception(got, True)
        # Processed and its reply sent before that returned.
        assert [s.status for s in world.connector.statuses(leg.uetr)] == ["ACSP"]
    assert not [n for n in committed if n.startswith("pvp-inbox-")]


def test_replies_the_reception_thread_may_not_wait_to_send_go_to_the_connectors_lane(
    world: InProcessPvP,
) -> None:
    """Applied on receipt while every other reception thread waits on a post: the reply it
    claimed is sent by a thread of the connector's lane, not by this thread, and not left to
    its lease (who delivered is seen through the delivery's watcher)."""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    delivered: list[tuple[str, str]] = []
    done = threading.Event()

    def watcher(event: str, rows: Sequence[Any], outcome: str) -> None:
        if event == "delivered":
            delivered.extend((threading.current_thread().name, outcome) for _ in rows)
            done.set()

    world.runtime.dispatcher.delivery.watch(watcher)
    leg = Leg(uetr(), 1_000)
    [answer], got = world.runtime.receive([world.pacs009(leg)], process=True)
    assert answer.status == 202 and len(got.claimed) == 1
    world.runtime._after_reception(got, False)
    assert done.wait(10)
    [(thread, outcome)] = delivered
    world.connector.wait_status(leg.uetr, "ACSP")
    assert thread.startswith("pvp-send-") and outcome == "sent"


def test_a_reception_whose_envelopes_are_all_refused_has_nothing_to_send(
    world: InProcessPvP,
) -> None:
    """Refused before any transaction began (not XML): the answer is the admi.002, and the
    reception produced nothing claimed, stored or to process."""
    runtime = world.runtime
    [answer], got = runtime.receive([b"<not-xml"], process=True)
    assert answer.status == 400 and b"admi.002" in answer.body
    assert got.claimed == [] and got.inbox == []
    runtime._after_reception(got, True)
