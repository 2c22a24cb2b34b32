"""Group commit for SQLite in WAL mode: every commit durable, one fsync for many commits.

With ``synchronous=FULL`` SQLite fsyncs the write-ahead log inside COMMIT, while the
database's single write lock is still held: writers queue behind each other's fsyncs, one
fsync per transaction. Here SQLite runs with ``synchronous=NORMAL`` (it writes the log at
COMMIT but leaves the fsync out) and :meth:`WalGroupSync.committed`, called after COMMIT
has returned and the write lock has been released, fsyncs the log before the committing
thread goes on. Threads that commit while an fsync is in flight wait for the next one,
which covers them all.

The guarantee is FULL's: a transaction whose commit has returned to its caller is on disk
and survives a power loss, and nothing outside the process (an HTTP answer, an outbound
message, a webhook) learns of a transaction before that. Writers are blocked in their commit
until then; readers, which in WAL mode can see a transaction the moment its COMMIT returns,
end their transaction with :meth:`WalGroupSync.barrier`, which waits for the fsync when a
commit is still on its way to disk (and costs nothing when none is).

Checkpoints run on a thread of their own (:class:`Checkpointer`), not in the commit that
happens to cross SQLite's threshold: there the copy and the database's fsync (4-10 ms for the
1000 pages of a default checkpoint) ran while that writer still held the process's writer
lock, every other writer queued behind it, and the message that writer carried waited too.
In NORMAL mode SQLite fsyncs the log before a checkpoint copies it into the database, fsyncs
the database after, and fsyncs the log's header when it starts reusing the file.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from gateway import telemetry
from gateway.threads import start_thread

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 256
"""Commits between two checkpoints by :class:`Checkpointer`; it also runs one a second while
anything was committed. A PvP's commits write ~10-20 log pages each, so a round copies a few
thousand. Measured against 16, 64 and 1024 (``docs/performance.md``): a round copies each
page once however often it was written since, so fewer rounds write less; but a round's
writes and the database's fsync delay every commit's fsync meanwhile, so rounds of 1024
commits stalled commits for tens of ms."""

SLOW_FSYNC_SECONDS = 0.02
"""An fsync of the log that takes longer is logged (at most once a second, with how many there
were and the longest): every commit of the process waited for it, and a disk that stalls so
sets the latency tail (``docs/performance.md``). ~0.3-4 ms is usual here."""

SLOW_FSYNC_REPORT = (
    "slow fsync of %s: %d over %.0f ms since the last report, the longest %.1f ms "
    "(every commit of this process waited for it)"
)
"""The log line of :meth:`WalGroupSync._slow_fsync` (path, count, threshold, longest);
:func:`slow_fsync_reports` reads it back."""

_SLOW_FSYNC_LINE = re.compile(
    # The report itself, its fields turned into groups: the two cannot drift apart.
    re.escape(SLOW_FSYNC_REPORT)
    .replace("%s", r"\S+")
    .replace("%d", r"(\d+)")
    .replace(r"%\.0f", r"\d+")
    .replace(r"%\.1f", r"([\d.]+)")
)


def slow_fsync_reports(text: str) -> tuple[int, float]:
    """The slow fsyncs reported in a process's log ``text``: how many, and the longest in
    ms (0 and 0.0 for none). A stall less than a second after a report is counted in the
    next report, so a last one with no report after it is missing."""
    found = [(int(n), float(ms)) for n, ms in _SLOW_FSYNC_LINE.findall(text)]
    return sum(n for n, _ in found), max((ms for _, ms in found), default=0.0)


INLINE_CHECKPOINT_BYTES = 10_000 * 4096
"""How much log SQLite's own checkpoint (``wal_autocheckpoint``, in the committing writer)
lets pass: kept as a safety net (the checkpointer stopped or starved), past what the
checkpointer lets the log reach. In bytes, so that smaller pages (``PAGE_SIZE``) do not
bring it closer: at 1 KiB, 10,000 pages were reached in bursts of batched transactions,
which then checkpointed in their commits (batched PvP/s 1,121-1,266 against 1,263-1,298
with the net at the same bytes as with 4 KiB pages)."""


def inline_checkpoint_pages(page_size: int) -> int:
    """``INLINE_CHECKPOINT_BYTES`` in pages of a database's ``page_size``."""
    return max(1000, INLINE_CHECKPOINT_BYTES // page_size)


PAGE_SIZE = 1024
"""Page size of the SQLite databases this code creates (``PRAGMA page_size``, which a
database keeps for life: one made before stays at SQLite's 4 KiB). A transaction writes each
page it changes whole into the log, and on the per-message paths most of those pages are
index leaves with a row or two changed: at 1 KiB a commit writes about a third of the bytes,
for the fsync that makes it durable and for the checkpoint that copies it. Measured in
``docs/performance.md`` (lower median and CPU, and a lower tail at a given load)."""

PAGE_SIZE_PRAGMA = f"PRAGMA page_size={PAGE_SIZE}"
"""Issued on every connection before anything else: it takes effect only on a database not
created yet (before its first page is written, hence before ``journal_mode=WAL``)."""


def fsync_path(path: str) -> None:
    """fsync a file by name; a log that does not exist (yet, or any more) has nothing to sync.

    The file is opened anew each time: SQLite deletes the log when its last connection
    closes (after checkpointing it into the synced database) and may create it again, and a
    descriptor kept from before would sync the old, unlinked file.

    On Linux ``fdatasync``, as SQLite itself syncs its log: the log's size changes only as it
    grows, which ``fdatasync`` also makes durable, and it skips the inode's timestamps, an
    ext4 journal commit that cost a third of each sync (57 µs of CPU and 174 µs of wait
    against 41 and 128 µs, on a 4 KiB write)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if sys.platform == "darwin":  # fsync alone does not reach the platter on macOS
            import fcntl

            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        elif sys.platform.startswith("linux"):
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    finally:
        os.close(fd)


CheckpointFn = Callable[[sqlite3.Connection], tuple[int, int, int]]
"""A checkpoint of the log on a connection: (busy, log pages, pages copied)."""


def passive_checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """One PASSIVE checkpoint: (busy, log pages, pages copied), as SQLite reports."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def durability_pragmas(sync: WalGroupSync | None, page_size: int = PAGE_SIZE) -> list[str]:
    """What a connection to a SQLite database sets for its commits' durability: with
    ``sync`` (a file database), NORMAL, which leaves the log's fsync out of COMMIT for
    ``sync`` to do after, for many commits at once, before any of them returns (durability
    stays FULL's), and checkpoints left to ``sync``'s :class:`Checkpointer`; without,
    SQLite's FULL. ``page_size``: the database's (``PRAGMA page_size``)."""
    if sync is None:
        return ["PRAGMA synchronous=FULL"]
    return [
        "PRAGMA synchronous=NORMAL",
        f"PRAGMA wal_autocheckpoint={inline_checkpoint_pages(page_size)}",
    ]


def prepare_connection(
    dbapi_conn: sqlite3.Connection, sync: WalGroupSync | None, busy_ms: int
) -> None:
    """Set up a new driver connection to a SQLite database, as both the gateway's engine and
    the connector's do: autocommit at the driver (the engine's "begin" listener issues
    BEGIN), ``PAGE_SIZE`` for a database not created yet, WAL, the durability settings for
    the database's actual page size (:func:`durability_pragmas`), the busy timeout, foreign
    keys."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(PAGE_SIZE_PRAGMA)
        cur.execute("PRAGMA journal_mode=WAL")
        page_size = int(cur.execute("PRAGMA page_size").fetchone()[0])
        for pragma in durability_pragmas(sync, page_size):
            cur.execute(pragma)
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


_GROUP_SYNCS: weakref.WeakKeyDictionary[Any, WalGroupSync] = weakref.WeakKeyDictionary()


def attach(engine: Any, sync: WalGroupSync) -> None:
    """Record ``sync`` as the group commit of ``engine`` (see :func:`group_sync`)."""
    _GROUP_SYNCS[engine] = sync


def group_sync(engine: Any) -> WalGroupSync | None:
    """The group commit behind an engine (the gateway's or the connector's, on a SQLite
    file), else None."""
    return _GROUP_SYNCS.get(engine)


NO_SYNC = "dt_no_sync"
"""Execution option of a write transaction whose commit does not wait for the log's fsync:
what it records may be lost in a crash without harm, because it is bookkeeping of
at-least-once delivery (a message marked sent) whose receivers deduplicate; a later
commit's fsync covers it. Saves the fsync and the wait of the sender that records it."""


class WalGroupSync:
    """Make commits durable by fsyncing ``<database>-wal``, many commits per fsync.

    A writer calls :meth:`before_commit` just before COMMIT and :meth:`committed` once COMMIT
    has returned (or failed) and it has let go of the write lock. A reader calls
    :meth:`barrier` when its transaction ends, before acting on what it read.

    ``fsync`` syncs the log by its path (:func:`fsync_path`); ``clock`` (seconds, monotonic)
    times the fsyncs for the slow-fsync report; ``checkpoint`` is the checkpointer's copy
    (:func:`passive_checkpoint`). The three are the edges below the ordering this class
    keeps (the disk, time, SQLite's checkpoint), given here so that a test can hold or count
    them: :func:`gateway.sqlite.engine.sqlite_engine` takes a factory of this class.
    """

    def __init__(
        self,
        db_path: str,
        *,
        fsync: Callable[[str], None] = fsync_path,
        clock: Callable[[], float] = time.monotonic,
        checkpoint: CheckpointFn | None = None,
    ) -> None:
        self.wal_path = f"{db_path}-wal"
        self.checkpointer = Checkpointer(
            db_path, CHECKPOINT_EVERY, checkpoint=checkpoint or passive_checkpoint
        )
        self._fsync = fsync
        self._clock = clock
        self._cv = threading.Condition(threading.Lock())
        self._requested = 0  # sync requests so far: commits, and barriers that need one
        self._synced = 0  # requests covered by a finished fsync
        self._syncing = False
        self._in_commit = 0  # writers between before_commit and the end of committed
        self.fsyncs = 0  # finished fsyncs (for tests and metrics)
        self._slow = 0  # fsyncs over SLOW_FSYNC_SECONDS not logged yet
        self._slowest = 0.0
        self._slow_logged_at: float | None = None

    @property
    def waiting(self) -> int:
        """Sync requests (commits, and barriers that need an fsync) not covered yet by a
        finished fsync: the threads waiting for one or in it, and the requests of an fsync
        that failed until the next one succeeds (for tests and metrics)."""
        return self._requested - self._synced

    def before_commit(self) -> None:
        with self._cv:
            self._in_commit += 1

    def committed(self) -> None:
        """Return once this writer's commit is on disk.

        Raises the fsync's ``OSError`` if the log could not be synced: the transaction is then
        committed but not known to be durable, and the caller must treat it as failed (every
        unit of work is idempotent on retry)."""
        with self._cv:
            try:
                self._sync_locked()
            finally:
                self._in_commit -= 1
        self.checkpointer.committed()

    def barrier(self) -> None:
        """Return once every commit this thread could have read is on disk. Free when no
        writer is between its COMMIT and the fsync that covers it."""
        with self._cv:
            if self._in_commit == 0:
                return
            self._sync_locked()

    def _sync_locked(self) -> None:
        # Wait for an fsync that *starts* after this call: whatever the caller wrote or read
        # is in the log file by now, so such an fsync covers it.
        self._requested += 1
        mine = self._requested
        while self._synced < mine:
            if self._syncing:
                self._cv.wait()
                continue
            target = self._requested
            self._syncing = True
            self._cv.release()
            started = self._clock()
            try:
                self._fsync(self.wal_path)
            finally:
                took = self._clock() - started
                self._cv.acquire()
                self._syncing = False
                self._cv.notify_all()
            self.fsyncs += 1
            telemetry.fsync_done(took, max(0, target - self._synced))
            self._synced = max(self._synced, target)
            if took > SLOW_FSYNC_SECONDS:
                self._slow_fsync(took)

    def _slow_fsync(self, took: float) -> None:
        # Under self._cv. Logged at most once a second: a disk that stalls often would
        # otherwise add a log line per commit group to its troubles.
        self._slow += 1
        self._slowest = max(self._slowest, took)
        now = self._clock()
        if self._slow_logged_at is not None and now - self._slow_logged_at < 1.0:
            return
        log.warning(
            SLOW_FSYNC_REPORT,
            self.wal_path,
            self._slow,
            SLOW_FSYNC_SECONDS * 1000,
            self._slowest * 1000,
        )
        self._slow, self._slowest, self._slow_logged_at = 0, 0.0, now


class Checkpointer:
    """Checkpoints a WAL database on a daemon thread, every ``every`` commits, and once a
    second while anything was committed (transactions of many PvPs, in batched mode, write
    hundreds of pages each).

    A PASSIVE checkpoint (``checkpoint``, :func:`passive_checkpoint` unless given): it
    copies what no reader still needs into the database without
    waiting for, or blocking, readers and writers (SQLite's checkpoint lock is not its write
    lock), and the driver lets go of the GIL while it runs. A writer that starts once the
    whole log is copied writes the log again from its start, so the file stays small.

    The thread starts with the first round and ends after ``IDLE_SECONDS`` without one; each
    round opens a connection of its own and closes it (a round every few hundred commits: the
    open costs less than a kept connection and thread would in a process that makes many
    engines, as the tests do). A failure is logged and the next round tries again; SQLite's
    own checkpoint (``INLINE_CHECKPOINT_BYTES``) is the net below."""

    IDLE_SECONDS = 10.0
    PERIOD_SECONDS = 1.0

    def __init__(self, db_path: str, every: int, *, checkpoint: CheckpointFn | None = None) -> None:
        self.db_path = db_path
        self.every = max(1, every)
        self._checkpoint = checkpoint or passive_checkpoint
        self._commits = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.writer_lock: AbstractContextManager[Any] | None = None
        """The lock the process's writers hold from BEGIN to COMMIT (set by the engine)."""

    def committed(self) -> None:
        # Unlocked: two commits counted as one at worst (a round a commit later).
        self._commits += 1
        if self._commits >= self.every:
            self._commits = 0
            self._wake.set()
            if self._thread is None:
                with self._lock:
                    if self._thread is None:
                        self._thread = start_thread(self._run, "sqlite-checkpoint")

    def _round(self) -> None:
        """Copy the log into the database beside the writers, then once more with the
        process's writer lock held: no writer of this process can append between that copy
        and the next write transaction, which then finds the whole log copied and writes it
        again from its start. (Without that step the log never started again under constant
        load: a writer had always appended since, and it grew by ~40 MB a minute.) The lock is
        held for the frames committed during the first copy only."""
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            self._checkpoint(conn)
            if self.writer_lock is not None:
                with self.writer_lock:
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _run(self) -> None:
        idle = 0.0
        while True:
            woken = self._wake.wait(self.PERIOD_SECONDS)
            if not woken and self._commits == 0:
                idle += self.PERIOD_SECONDS
                if idle < self.IDLE_SECONDS:
                    continue
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None
                        return
            idle = 0.0
            self._wake.clear()
            self._commits = 0
            try:
                self._round()
            except sqlite3.Error:
                log.exception("checkpoint of %s failed; the next round tries again", self.db_path)
