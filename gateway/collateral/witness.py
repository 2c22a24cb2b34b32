"""A C2SP ``tlog-witness``: what a witness remembers of each log, and when it cosigns.

A witness is a party independent of the log. For every log it follows (named by its origin and
pinned by its verifier key) it keeps the size and root hash of the last checkpoint it cosigned,
and it cosigns a new checkpoint only if the log proves that the new tree extends that one. So
two checkpoints it cosigned for one log are always consistent, and a log that shows one history
to some people and another to others (a *split view*) cannot have both cosigned by the same
witness. Clients that ask for cosignatures from witnesses they trust are thereby protected.

This module is the witness's whole logic and state; :mod:`gateway.collateral.witness_server`
serves it over HTTP (``dt-gateway witness``). Like the public verifier, it imports only the
standard library, ``cryptography`` and the verifier's ``note`` and ``tlog`` modules (an
import-linter contract keeps it so), so anyone who runs a witness can read what it does.

``add-checkpoint`` (tlog-witness), checked in this order; each refusal raises
:class:`Refused` with the status the specification gives, and leaves the state unchanged::

    400  the request is malformed (old size line, proof lines, checkpoint), or the old size
         is larger than the checkpoint's size
    404  the checkpoint's origin is not a log this witness follows
    403  no signature by a key the witness trusts for that origin, or such a signature fails
    409  the old size is not the size of the last checkpoint cosigned for this log; the body is
         that size and a newline (``text/x.tlog.size``): the log should prove consistency
         from it
    422  the checkpoint does not extend the last cosigned one: a size-0 checkpoint whose root
         is not the empty tree's, a proof given from size 0, a consistency proof that does not
         verify, or a root different from the cosigned one at the same size

Invariants of the state (:class:`WitnessState`, one SQLite file):

- per origin, at most one row: the size and root of the last cosigned checkpoint, and that
  checkpoint as a note carrying the log's verified signature and the witness's cosignature;
- the comparison with the row and its update happen in one transaction (``BEGIN IMMEDIATE``),
  under a lock, so two requests cannot both pass against the same old size and roll the tree
  back (the race the specification warns of);
- the update is durable before the cosignature is returned: the database runs with
  ``synchronous=FULL``, so a witness killed at any moment comes back with either the old row
  (and the client never received the cosignature) or the new one;
- a refused request signed by the log that fails a consistency check (a 422) is kept as
  evidence, since it may prove the log's misbehaviour; only the newest
  :data:`EVIDENCE_KEPT` per log are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.collateral import note, tlog

__all__ = [
    "EVIDENCE_KEPT",
    "MAX_PROOF_LINES",
    "MAX_REQUEST_SIZE",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "LogState",
    "Refused",
    "Witness",
    "WitnessState",
    "origin_hash",
    "parse_add_checkpoint",
]

MAX_PROOF_LINES = 63
MAX_REQUEST_SIZE = note.MAX_NOTE_SIZE + 64 * 64
"""The largest ``add-checkpoint`` body: a note of the largest size, 64 short lines before it."""
SIZE_CONTENT_TYPE = "text/x.tlog.size"
EVIDENCE_KEPT = 1000
_MAX_SIZE = (1 << 63) - 1
"""Largest tree size stored (SQLite integers are signed 64-bit; no log comes near it)."""
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


class Refused(Exception):
    """An ``add-checkpoint`` the witness does not cosign: ``status`` is the HTTP status the
    specification gives, ``body`` what to answer (a reason, or the size for a 409)."""

    def __init__(self, status: int, reason: str, body: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body if body is not None else reason + "\n"

    @property
    def content_type(self) -> str:
        return SIZE_CONTENT_TYPE if self.status == 409 else "text/plain; charset=utf-8"


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` body: old size, consistency proof, the checkpoint's note."""

    old: int
    proof: tuple[bytes, ...]
    note: bytes


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Splits the body into its parts; 400 for anything tlog-witness does not allow."""
    if len(body) > MAX_REQUEST_SIZE:
        raise Refused(400, f"request is larger than {MAX_REQUEST_SIZE} bytes")
    head, sep, rest = body.partition(b"\n\n")
    if not sep:
        raise Refused(400, "no empty line between the old size and proof lines and the note")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise Refused(400, "old size and proof lines must be ASCII") from None
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise Refused(400, "the first line must be 'old <size>' (decimal, no leading zeros)")
    old = int(match[1])
    if old > _MAX_SIZE:
        raise Refused(400, f"old size {old} is out of range")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Refused(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for i, line in enumerate(lines[1:]):
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, f"proof line {i + 1} is not base64") from None
        if len(digest) != tlog.HASH_SIZE or base64.b64encode(digest).decode() != line:
            raise Refused(400, f"proof line {i + 1} is not the base64 of a 32-byte hash")
        proof.append(digest)
    return AddCheckpoint(old, tuple(proof), rest)


def origin_hash(origin: str) -> str:
    """The monitoring path's name for a log: lowercase hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


@dataclass(frozen=True)
class LogState:
    """The last checkpoint the witness cosigned for ``origin``."""

    origin: str
    size: int
    root: bytes
    checkpoint: str
    """The checkpoint as a signed note: the log's verified signature and the cosignature."""
    updated_at: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_state (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    checkpoint TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    request BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_origin ON evidence (origin, id);
"""


class WitnessState:
    """The witness's durable state in one SQLite file (module docstring: invariants).

    One connection, used under :attr:`lock` from any thread. ``evidence_kept``: how many
    refusals are kept as evidence per log, the newest (:data:`EVIDENCE_KEPT`)."""

    def __init__(self, path: Path | str, *, evidence_kept: int = EVIDENCE_KEPT) -> None:
        self.path = path
        self.evidence_kept = evidence_kept
        self.lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def _row(self, origin: str) -> LogState | None:
        row = self._db.execute(
            "SELECT size, root, checkpoint, updated_at FROM log_state WHERE origin = ?",
            (origin,),
        ).fetchone()
        if row is None:
            return None
        return LogState(origin, int(row[0]), bytes(row[1]), str(row[2]), int(row[3]))

    def get(self, origin: str) -> LogState | None:
        with self.lock:
            return self._row(origin)

    def update(self, origin: str, decide: Callable[[LogState | None], LogState]) -> LogState:
        """Reads the row of ``origin``, lets ``decide`` refuse (raise) or return the new row,
        and stores it, in one immediate transaction under the lock."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = decide(self._row(origin))
                self._db.execute(
                    "INSERT INTO log_state (origin, size, root, checkpoint, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET"
                    " size = excluded.size, root = excluded.root,"
                    " checkpoint = excluded.checkpoint, updated_at = excluded.updated_at",
                    (new.origin, new.size, new.root, new.checkpoint, new.updated_at),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return new

    def keep_evidence(self, origin: str, reason: str, request: bytes, at: int) -> None:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO evidence (origin, received_at, reason, request)"
                    " VALUES (?, ?, ?, ?)",
                    (origin, at, reason, request),
                )
                self._db.execute(
                    "DELETE FROM evidence WHERE origin = ? AND id <= ("
                    " SELECT id FROM evidence WHERE origin = ? ORDER BY id DESC"
                    " LIMIT 1 OFFSET ?)",
                    (origin, origin, self.evidence_kept),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def evidence(self, origin: str) -> list[tuple[int, str, bytes]]:
        """The refused requests kept for ``origin``: (received at, reason, request), oldest
        first."""
        with self.lock:
            rows = self._db.execute(
                "SELECT received_at, reason, request FROM evidence WHERE origin = ? ORDER BY id",
                (origin,),
            ).fetchall()
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]


def _signature_lines(opened: note.Note, trusted: Sequence[note.Verifier]) -> str:
    """The note's signature lines by the trusted keys (already verified by ``open_note``)."""
    ids = {(v.name, v.key_id) for v in trusted}
    return "".join(
        f"\u2014 {name} {base64.b64encode(kid + sig).decode()}\n"
        for name, kid, sig in opened.signatures
        if (name, kid) in ids
    )


class Witness:
    """Cosigns checkpoints of the logs it follows (``logs``: their verifier keys, each named
    by the log's origin), remembering each log in ``state``."""

    def __init__(
        self,
        cosigner: note.Cosigner,
        logs: Sequence[note.Verifier],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self.state = state
        self.clock = clock
        self.logs: dict[str, list[note.Verifier]] = {}
        for key in logs:
            if key.alg != note.ALG_ED25519:
                raise ValueError(f"log key {key.name} is not an Ed25519 (type 0x01) note key")
            self.logs.setdefault(key.name, []).append(key)
        self._by_hash = {origin_hash(origin): origin for origin in self.logs}

    @property
    def name(self) -> str:
        return self.cosigner.name

    def vkey(self) -> str:
        return self.cosigner.vkey()

    def add_checkpoint(self, body: bytes) -> str:
        """Handles one ``add-checkpoint`` body; returns the cosignature line (module docstring
        for the refusals, all :class:`Refused`)."""
        request = parse_add_checkpoint(body)
        first_line = request.note.split(b"\n", 1)[0].decode("utf-8", "replace")
        trusted = self.logs.get(first_line)
        if trusted is None:
            raise Refused(404, f"this witness follows no log with origin {first_line[:200]!r}")
        try:
            opened = note.open_note(request.note, trusted)
        except note.UnverifiedNote as exc:
            raise Refused(403, f"the checkpoint is not signed by the log's key: {exc}") from None
        except note.NoteError as exc:
            raise Refused(400, f"the checkpoint is not a valid signed note: {exc}") from None
        try:
            checkpoint = note.Checkpoint.parse(opened.text)
        except note.NoteError as exc:
            raise Refused(400, f"the checkpoint is malformed: {exc}") from None
        if checkpoint.size > _MAX_SIZE:
            raise Refused(400, f"checkpoint size {checkpoint.size} is out of range")
        if request.old > checkpoint.size:
            raise Refused(
                400, f"old size {request.old} is larger than the checkpoint's {checkpoint.size}"
            )
        signed = opened.text + "\n" + _signature_lines(opened, trusted)
        cosignature: list[str] = []

        def decide(last: LogState | None) -> LogState:
            self._check(request, checkpoint, last)
            cosignature.append(note.cosign(opened.text, self.cosigner, self._timestamp()))
            note_text = signed + cosignature[0]
            now = int(self.clock())
            return LogState(checkpoint.origin, checkpoint.size, checkpoint.root, note_text, now)

        try:
            self.state.update(checkpoint.origin, decide)
        except Refused as refusal:
            if refusal.status == 422:
                self.state.keep_evidence(checkpoint.origin, refusal.reason, body, int(self.clock()))
            raise
        return cosignature[0]

    def _timestamp(self) -> int:
        # The cosignature's time must not be zero (tlog-witness).
        return max(1, int(self.clock()))

    @staticmethod
    def _check(request: AddCheckpoint, checkpoint: note.Checkpoint, last: LogState | None) -> None:
        """The consistency rules, against the last cosigned checkpoint (in the transaction)."""
        last_size = last.size if last is not None else 0
        if request.old != last_size:
            raise Refused(
                409,
                f"the last checkpoint cosigned for this log has size {last_size}",
                f"{last_size}\n",
            )
        if checkpoint.size == 0 and checkpoint.root != tlog.EMPTY_ROOT:
            raise Refused(422, "a checkpoint of size 0 must have the empty tree's root")
        if request.old == 0:
            if request.proof:
                raise Refused(422, "a consistency proof from size 0 must be empty")
            return
        assert last is not None
        if last.size == checkpoint.size and last.root != checkpoint.root:
            raise Refused(
                422,
                f"the checkpoint of size {checkpoint.size} has root "
                f"{base64.b64encode(checkpoint.root).decode()}; the one cosigned at that size "
                f"has {base64.b64encode(last.root).decode()}",
            )
        try:
            tlog.verify_consistency(
                last.size, checkpoint.size, request.proof, last.root, checkpoint.root
            )
        except tlog.ProofError as exc:
            raise Refused(
                422,
                f"the consistency proof from size {last.size} to {checkpoint.size} does not "
                f"verify: {exc}",
            ) from None

    def checkpoint(self, hashed_origin: str) -> str | None:
        """The last cosigned checkpoint of the log whose origin hashes to ``hashed_origin``
        (the monitoring path), or None."""
        origin = self._by_hash.get(hashed_origin)
        if origin is None:
            return None
        state = self.state.get(origin)
        return None if state is None else state.checkpoint
