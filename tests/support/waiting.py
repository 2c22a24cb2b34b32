"""Waiting for a positive signal: the one polling loop of the tests.

Nothing in the tests waits for a fixed time; a test polls for what it expects, with a timeout
that only bounds a failure (a passing test waits as long as the signal takes).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    cond: Callable[[], T | None],
    what: str | Callable[[], str],
    *,
    timeout: float = 10.0,
    proc: subprocess.Popen[Any] | None = None,
    tolerate: tuple[type[BaseException], ...] = (),
    interval: float = 0.01,
) -> T:
    """Poll ``cond`` every ``interval`` seconds until it returns something truthy, and return
    that. Fails (``AssertionError``) after ``timeout`` seconds, saying ``what`` was awaited
    (a callable: asked then, to tell the state seen last), or as soon as ``proc``, a process
    the signal depends on, has exited. Exceptions of ``tolerate`` raised by ``cond`` (a
    server not up yet) count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = cond()
        except tolerate:
            pass
        else:
            if value:
                return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{_text(what)}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {_text(what)}")
        time.sleep(interval)


def _text(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


__all__ = ["wait_for"]
