"""Threads named for the operating system too (``gateway.threads``)."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from gateway.messaging.queues import Batcher
from gateway.threads import NATIVE_NAME_BYTES, native_name, start_thread

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names via /proc")


def _native_name_of(thread: threading.Thread) -> str:
    assert thread.native_id is not None
    return Path(f"/proc/self/task/{thread.native_id}/comm").read_text().strip()


@pytest.mark.parametrize(
    ("name", "native"),
    [
        ("pvp-reception-0", "pvp-reception-0"),
        ("sqlite-checkpoint", "sqlite-checkpoi"),
        ("connector-reception-1", "cn-reception-1"),
        ("connector-send-NBKZKZKAXXX-0", "cn-send-NBKZKZK"),
        ("dt-gateway-é", "dt-gateway-?"),
    ],
)
def test_native_names_fit_what_the_kernel_keeps(name: str, native: str) -> None:
    assert native_name(name) == native
    assert len(native_name(name).encode()) <= NATIVE_NAME_BYTES


@linux_only
def test_a_started_thread_bears_its_name_natively_and_runs_its_target() -> None:
    seen: list[str] = []
    release = threading.Event()

    def target(word: str) -> None:
        seen.append(word)
        release.wait(5)

    thread = start_thread(target, "connector-sweeper", args=("ran",))
    try:
        assert thread.name == "connector-sweeper" and thread.daemon
        for _ in range(200):  # the thread names itself first thing
            if seen:
                break
            threading.Event().wait(0.01)
        assert seen == ["ran"]
        assert _native_name_of(thread) == "cn-sweeper"
        # The main thread keeps the process's name.
        assert Path("/proc/self/comm").read_text().strip() != "cn-sweeper"
    finally:
        release.set()
        thread.join(5)


@linux_only
def test_batcher_threads_are_named_natively() -> None:
    names: list[str] = []

    def handle(items: list[int]) -> list[int]:
        names.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        return items

    batcher: Batcher[int, int] = Batcher(handle, name="pvp-reception")
    batcher.start()
    try:
        assert asyncio.run(batcher.submit(7)) == 7
    finally:
        batcher.stop()
    assert names == ["pvp-reception-0"]
