"""Psycopg's pipeline mode, sending what is queued at each sync instead of at each statement.

In pipeline mode psycopg hands each statement to libpq and flushes libpq's buffer there and
then: one ``send()`` to the server per statement, and on the server's side one wake-up and one
read of the socket per statement. Nothing waits for those statements' results before the next
sync (the pipeline's round trip) anyway. :func:`send_at_sync` makes a pipeline hand its
statements to libpq as they come and flush them once, with the sync (or the flush request of
a read whose rows are asked for): one write of the whole batch.

Measured alone (``ops/bench/pgsend.py``: transactions of 16 statements and two syncs, both
ways alternated, client and server on one machine): the client's CPU per transaction
425-579 → 276-375 µs, the backend's 335-405 → 255-310 µs; the wall time alike (the server
starts on the statements later, and is done with them sooner).

What psycopg does is otherwise unchanged: its statements, results and errors; an error of a
queued statement surfaces at the sync, as it did whenever its result had not come back before.
This relies on one method of psycopg's ``Pipeline`` (``_communicate_gen``), which the
project's psycopg pin keeps as it was (``pyproject.toml``); a psycopg without it is left as it
is (:func:`send_at_sync` returns False), sending per statement.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Any

from psycopg.generators import send


def send_at_sync(pipeline: Any) -> bool:
    """Make psycopg's ``pipeline`` (as ``Connection.pipeline()`` entered it) send at its
    syncs; whether it could."""
    if not callable(getattr(pipeline, "_communicate_gen", None)) or not hasattr(
        pipeline, "command_queue"
    ):
        return False
    pipeline._communicate_gen = functools.partial(_communicate_at_sync, pipeline)
    return True


def _communicate_at_sync(pipeline: Any) -> Generator[Any, Any, None]:
    """``Pipeline._communicate_gen``: the queued commands handed to libpq, which buffers them;
    flushed (all of it, reading meanwhile so that neither side blocks) only when one of them
    was a sync. The results are taken in by psycopg's own fetch after the sync."""
    pgconn = pipeline.pgconn
    queue = pipeline.command_queue
    sync = pgconn.pipeline_sync
    synced = False
    while queue:
        command = queue.popleft()
        command()
        synced = synced or command == sync
    if synced:
        yield from send(pgconn)


__all__ = ["send_at_sync"]
