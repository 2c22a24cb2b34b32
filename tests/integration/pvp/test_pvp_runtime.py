"""The PvP runtime's threads: a committed outbox message wakes one dispatcher, not all; who
processes a message that was just stored, and when."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import load_settings
from gateway.iso20022 import Message
from gateway.pvp import service
from gateway.pvp.runtime import PvPRuntime
from gateway.pvp.store import inbox_t
from tests.integration.pvp.conftest import Leg, PvPWorld, uetr


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


def _inbox_rows(world: PvPWorld) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inbox_t)).scalar_one())


def test_at_low_load_a_message_is_applied_in_the_transaction_that_stores_it(
    world: PvPWorld,
) -> None:
    """One commit before the 202 stores and applies the pacs.009: the leg is locked when the
    answer arrives, no inbox item was needed, no worker or later transaction processed it,
    and the reception thread sends the ACSP."""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    processed: list[int] = []
    process = world.runtime.process

    def recorded(message_id: int, message: Message | None = None) -> None:
        processed.append(message_id)
        process(message_id, message)

    world.runtime.process = recorded  # type: ignore[method-assign]
    leg = Leg(uetr(), 250_000)
    assert world.post(world.pacs009(leg)).status_code == 202
    assert world.leg_state(leg.uetr) == "locked"
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    world.connector.wait_status(leg.uetr, "ACSP")
    assert processed == []
    assert _inbox_rows(world) == 0


def test_with_process_on_receipt_off_the_reception_thread_processes_after_the_202(
    world: PvPWorld,
) -> None:
    """``pvp.process_on_receipt`` off: stored and answered first, then applied in a second
    transaction by the thread that stored it, with no worker woken for it."""
    settings = world.runtime.settings
    world.runtime.settings = settings.model_copy(
        update={"pvp": settings.pvp.model_copy(update={"process_on_receipt": False})}
    )
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    processed_on: list[str] = []
    process = world.runtime.process

    def recorded(message_id: int, message: Message | None = None) -> None:
        processed_on.append(threading.current_thread().name)
        process(message_id, message)

    world.runtime.process = recorded  # type: ignore[method-assign]
    leg = Leg(uetr(), 250_000)
    assert world.post(world.pacs009(leg)).status_code == 202
    world.connector.wait_status(leg.uetr, "ACSP")
    assert len(processed_on) == 1 and processed_on[0].startswith("pvp-reception-")
    assert _inbox_rows(world) == 1


def test_a_message_whose_application_fails_on_receipt_stays_stored_and_is_applied_later(
    world: PvPWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first application fails after it locked the funds and queued the ACSP: its
    savepoint takes all of that back (the reply it claimed included), the message stays stored
    with an inbox item, and the next attempt applies it once: one lock, one ACSP."""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    apply = service._apply
    calls: list[int] = []

    def failing_once(*args: Any) -> None:
        calls.append(1)
        apply(*args)
        if len(calls) == 1:
            raise RuntimeError("injected failure after the lock")

    monkeypatch.setattr(service, "_apply", failing_once)
    leg = Leg(uetr(), 250_000)
    assert world.post(world.pacs009(leg)).status_code == 202
    world.connector.wait_status(leg.uetr, "ACSP")
    assert len(calls) == 2
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)
    assert _inbox_rows(world) == 1
    time.sleep(0.2)  # a second ACSP, had the rolled-back one been sent, would be here by now
    assert [s.status for s in world.connector.statuses(leg.uetr)] == ["ACSP"]


@pytest.mark.parametrize(
    ("stored", "may_wait"),
    [
        # Several messages stored in one reception transaction (a backlog) are the workers'
        # to process, in transactions of many, while the reception thread goes back to storing.
        pytest.param([(1, None), (2, None)], True, id="stored-together"),
        # When the other reception threads are all posting replies, the last one must stay
        # free for the connector's posts (gateway.messaging.queues.Batcher): what it stored goes
        # to the workers, even alone, since processing it means posting the reply and waiting.
        pytest.param([(1, None)], False, id="may-not-wait"),
    ],
)
def test_what_the_reception_thread_does_not_process_goes_to_the_workers(
    world: PvPWorld, stored: list[tuple[int, Message | None]], may_wait: bool
) -> None:
    runtime = world.runtime
    queued: list[list[tuple[int, Message | None]]] = []
    inbox, runtime._inbox = runtime._inbox, _Recording(queued)  # type: ignore[assignment]
    runtime.process_batch = _fail  # type: ignore[method-assign]
    try:
        runtime._received.items = list(stored)
        runtime.process_received(may_wait)
    finally:
        runtime._inbox = inbox  # the workers' stop sentinels go there
    assert queued == [stored]
    assert runtime._received.items is None


def test_a_reception_whose_transaction_fails_sends_nothing_it_had_queued(
    world: PvPWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pacs.009 is applied and its ACSP queued, then the commit fails: the connector gets
    an error, not the reply of a lock that does not exist; its retry is applied once."""
    world.wallet("hsbk-dt", fund=1_000_000)
    world.wallet("cbuae-dt")
    real = service.retrying
    failures = [RuntimeError("the commit failed")]

    def failing_commit(uow: Any, work: Any, **kw: Any) -> Any:
        if not failures:
            return real(uow, work, **kw)
        with uow:
            work()
            assert uow.outbox.claimed  # the ACSP, queued and claimed for sending
            raise failures.pop()

    monkeypatch.setattr(service, "retrying", failing_commit)
    leg = Leg(uetr(), 250_000)
    raw = world.pacs009(leg)
    assert world.post(raw).status_code >= 500
    time.sleep(0.3)
    assert world.connector.statuses(leg.uetr) == []
    assert world.balance("hsbk-dt") == (1_000_000, 0)
    assert world.post(raw).status_code == 202
    world.connector.wait_status(leg.uetr, "ACSP")
    assert world.balance("hsbk-dt") == (1_000_000, 250_000)


def test_replies_the_reception_thread_may_not_wait_to_send_go_to_a_dispatcher(
    world: PvPWorld,
) -> None:
    """Applied on receipt while every other reception thread waits on a post: the replies it
    claimed are sent by an outbox dispatcher, not by this thread, and not left to their lease."""
    runtime = world.runtime
    sent_on: list[tuple[str, list[object]]] = []
    done = threading.Event()

    def deliver(claimed: list[object]) -> int:
        if claimed:  # a dispatcher's own poll delivers what it claimed, often nothing
            sent_on.append((threading.current_thread().name, list(claimed)))
            done.set()
        return len(claimed)

    runtime.dispatcher.deliver = deliver  # type: ignore[assignment,method-assign]
    reply = object()
    runtime._received.uow = SimpleNamespace(claimed=[reply])
    runtime._received.items = []
    runtime.process_received(False)
    assert done.wait(5)
    [(thread, claimed)] = sent_on
    assert thread.startswith("pvp-outbox-") and claimed == [reply]


def test_a_reception_whose_envelopes_are_all_refused_has_nothing_to_send(
    world: PvPWorld,
) -> None:
    """Refused before any transaction began (not XML): the answer is the admi.002, and the
    work after the answers finds nothing claimed, stored or to process (it used to fail on a
    unit of work that never began, an error logged per junk post)."""
    runtime = world.runtime
    runtime.process_batch = _fail  # type: ignore[method-assign]
    [answer] = runtime._receive_here([b"<not-xml"])
    assert answer.status == 400 and b"admi.002" in answer.body
    runtime.process_received(True)
    assert runtime._received.uow is None and runtime._received.items is None


class _Recording:
    def __init__(self, into: list[list[tuple[int, Message | None]]]) -> None:
        self.into = into

    def put(self, items: list[tuple[int, Message | None]]) -> None:
        self.into.append(items)

    def empty(self) -> bool:
        return not self.into


def _fail(*_: object) -> None:
    raise AssertionError("processed on the reception thread")
