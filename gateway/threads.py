"""Threads the gateway and the connector start, named for the operating system too.

Python 3.11 names its threads for itself only: to ``top -H``, ``ps -L``, ``py-spy`` or
``/proc/<pid>/task/*/comm``, every thread of a process bears the process's name, so which one
is busy (the reception, the outbox, the checkpoints) cannot be told from outside. A thread
started by :func:`start_thread` gives itself its Python name as its native name (Linux; kernel
names hold 15 bytes, so a longer one is shortened, see :func:`native_name`). The main thread
keeps the process's name: tools find the process by it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

NATIVE_NAME_BYTES = 15
"""What the kernel keeps of a thread's name (16 bytes with the terminating NUL)."""

_SHORTER = (("connector-", "cn-"),)


def native_name(name: str) -> str:
    """The name a thread called ``name`` bears natively: ``connector-`` shortened to ``cn-``,
    then cut to :data:`NATIVE_NAME_BYTES` (``pvp-reception-0`` fits as it is)."""
    for long, short in _SHORTER:
        if name.startswith(long):
            name = short + name[len(long) :]
    return name.encode("ascii", "replace")[:NATIVE_NAME_BYTES].decode("ascii")


def name_this_thread(name: str) -> None:
    """Give the calling thread the native name :func:`native_name` of ``name``. Best effort:
    elsewhere than on Linux, or without ``/proc``, it stays as it was."""
    if not sys.platform.startswith("linux"):
        return
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(native_name(name))
    except OSError:
        pass


def start_thread(
    target: Callable[..., Any], name: str, *, args: tuple[Any, ...] = (), daemon: bool = True
) -> threading.Thread:
    """Start a thread called ``name`` (for Python and, see the module docstring, natively)
    that runs ``target(*args)``."""

    def run() -> None:
        name_this_thread(name)
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()
    return thread


__all__ = ["NATIVE_NAME_BYTES", "name_this_thread", "native_name", "start_thread"]
