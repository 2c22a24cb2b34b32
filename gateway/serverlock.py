"""One ``dt-gateway serve`` per SQLite database file.

A gateway process assumes it is SQLite's only server: it queues its writers on a lock of its
own, makes commits durable by its own group fsync, and runs every scheduled job. A second
server on the same file would contend for SQLite's lock behind the first one's back (its
writes failing with "database is locked" under load) and run every job twice. Replicas need
PostgreSQL. So ``serve`` takes an exclusive lock on ``<database>.serve-lock`` before anything
else and holds it while it runs; a second one is refused at once, naming the first one's pid.
The operating system releases the lock when the process ends, however it ends (even
``kill -9``), so a crashed server never blocks its restart.

CLI commands (``keys``, ``ledger check``, ``db``) do not take it: they may run beside the server.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from gateway.errors import GatewayError


class DatabaseInUse(GatewayError):
    code = "DATABASE_IN_USE"
    kind = "conflict"
    title = "Another gateway serves this SQLite database"


class ServerLock:
    """The lock held; keep a reference for as long as the process serves."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        self._handle.close()


def lock_path(database_url: str) -> Path | None:
    """The lock file of a SQLite file database; None for PostgreSQL or an in-memory one."""
    if not database_url.startswith("sqlite"):
        return None
    db = sa.engine.make_url(database_url).database
    if not db or db == ":memory:" or "mode=memory" in database_url:
        return None
    return Path(db).resolve().with_name(Path(db).name + ".serve-lock")


def hold_server_lock(database_url: str) -> ServerLock | None:
    """Take the serving lock of ``database_url`` (None: nothing to lock), or raise
    :class:`DatabaseInUse` naming the process that holds it."""
    path = lock_path(database_url)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open while the process serves)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        database = path.with_name(path.name.removesuffix(".serve-lock"))
        raise DatabaseInUse(
            f"another `dt-gateway serve` (pid {holder}) is already serving the SQLite "
            f"database {database}: one process serves a SQLite database; stop that one "
            f"first, or run replicas on PostgreSQL (lock file: {path})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return ServerLock(path, handle)


__all__ = ["DatabaseInUse", "ServerLock", "hold_server_lock", "lock_path"]
