"""Counting the commits a piece of code makes on the calling thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine


@contextmanager
def commits_on_this_thread(engine: Engine) -> Iterator[list[int]]:
    """The commits ``engine`` sees from this thread inside the block (one entry each); other
    threads' commits (dispatchers, workers) are not counted."""
    me = threading.current_thread()
    commits: list[int] = []

    def count(_conn: object) -> None:
        if threading.current_thread() is me:
            commits.append(1)

    sa.event.listen(engine, "commit", count)
    try:
        yield commits
    finally:
        sa.event.remove(engine, "commit", count)
