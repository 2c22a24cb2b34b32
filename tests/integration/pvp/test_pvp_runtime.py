"""The PvP runtime's threads: a committed outbox message wakes one dispatcher, not all; who
processes a message that was just stored."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from gateway.config import load_settings
from gateway.iso20022 import Message
from gateway.pvp.runtime import PvPRuntime
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


def test_the_reception_thread_processes_what_it_stored_alone(world: PvPWorld) -> None:
    """At low load the thread that stored a message processes it after the 202: no worker
    is woken for it."""
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


@pytest.mark.parametrize(
    ("stored", "may_wait"),
    [
        # Several messages stored in one reception transaction (a backlog) are the workers'
        # to process, in transactions of many, while the reception thread goes back to storing.
        pytest.param([(1, None), (2, None)], True, id="stored-together"),
        # When the other reception threads are all posting replies, the last one must stay
        # free for the connector's posts (gateway.queues.Batcher): what it stored goes to the
        # workers, even alone, since processing it means posting the reply and waiting.
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


class _Recording:
    def __init__(self, into: list[list[tuple[int, Message | None]]]) -> None:
        self.into = into

    def put(self, items: list[tuple[int, Message | None]]) -> None:
        self.into.append(items)

    def empty(self) -> bool:
        return not self.into


def _fail(*_: object) -> None:
    raise AssertionError("processed on the reception thread")
