"""Taking work off a thread's queue in batches."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def take_queued(source: queue.SimpleQueue[T | None], first: T, limit: int) -> tuple[list[T], bool]:
    """``first`` and whatever else is queued right now, up to ``limit`` items, never waiting
    for more: under load one batch (one commit) for many, no delay at all when there is one.
    Returns the items and whether the stop sentinel (``None``) was met."""
    items = [first]
    while len(items) < limit:
        try:
            more = source.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return items, True
        items.append(more)
    return items, False
