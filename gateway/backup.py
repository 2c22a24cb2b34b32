"""``dt-gateway db backup``: an online copy of a SQLite database, taken while it serves.

SQLite's backup API copies the database as one read transaction sees it, from a connection of
its own: the copy holds every transaction committed before it began (those still in the
write-ahead log too) and none after, and the server goes on writing meanwhile (in WAL mode a
reader never blocks the writer). The copy is written beside the target, synced, checked
(``PRAGMA quick_check``) and only then renamed into place, so a target never holds half a
backup. PostgreSQL is backed up with its own tools (``pg_dump``; docs/operations.md).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from gateway.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    pages: int
    bytes: int


def sqlite_path(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        raise InvalidInput(
            "`db backup` copies a SQLite database; back PostgreSQL up with pg_dump "
            "(docs/operations.md, Backup and restore)"
        )
    db = sa.engine.make_url(database_url).database
    if not db or db == ":memory:" or "mode=memory" in database_url:
        raise InvalidInput("an in-memory database has nothing to back up")
    path = Path(db)
    if not path.is_file():
        raise InvalidInput(f"no database at {path}")
    return path


def backup_sqlite(database_url: str, target: Path) -> Backup:
    """Copy the database of ``database_url`` to ``target`` (replaced if it exists)."""
    source_path = sqlite_path(database_url)
    target = target.resolve()
    if target == source_path.resolve():
        raise InvalidInput("the backup cannot replace the database itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # all pages in one step: one consistent snapshot
            copy.execute("PRAGMA journal_mode=DELETE")  # a single file, no -wal beside it
            verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
            pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
        finally:
            copy.close()
    finally:
        source.close()
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise InvalidInput(f"the copy failed its check: {verdict}")
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return Backup(target, pages, target.stat().st_size)


__all__ = ["Backup", "backup_sqlite", "sqlite_path"]
