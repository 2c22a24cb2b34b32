"""What the verifier remembers between runs: the last checkpoint it verified, and where it was.

The state file (JSON) keeps the origin, the last verified size and root, the compact range of
that tree (the :class:`tlog.Frontier`), the replay's running totals (balance, supply, last
statement, last chain event, the event entries no statement covers yet) and the last block whose
on-chain anchors (reserve attestations) were checked. The next run therefore
downloads only the entries appended since, extends the stored compact range with them and
compares the result with the new signed root: that one comparison proves both that the new tree
extends the old one (consistency) and that the new entries are in it (inclusion).

The file is replaced atomically (write aside, fsync, rename) and only after a run has passed.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.collateral import tlog
from gateway.collateral.entries import EntryError
from gateway.collateral.replay import Replay
from gateway.collateral.verdict import ExitCode, Failure

FORMAT = "dt-gateway-collateral-verifier/1"


@dataclass
class State:
    """The last verified tree of the log ``origin`` and the replay up to it.

    Invariants: ``frontier.size == replay.size`` and ``frontier.root() == root``.
    """

    origin: str
    frontier: tlog.Frontier
    replay: Replay
    timestamp: int | None = None
    anchor_block: int = -1
    """The last block whose anchors were checked (-1: none yet)."""

    @classmethod
    def empty(cls, origin: str) -> State:
        return cls(origin, tlog.Frontier(), Replay())

    @property
    def size(self) -> int:
        return self.frontier.size

    @property
    def root(self) -> bytes:
        return self.frontier.root()

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "timestamp": self.timestamp,
            "frontier": self.frontier.to_json(),
            "replay": self.replay.to_json(),
            "anchor_block": self.anchor_block,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> State:
        """Reads :meth:`to_json`; ``ValueError`` if the file is not one, or is inconsistent."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            frontier = tlog.Frontier.from_json(data["frontier"])  # type: ignore[arg-type]
            replay = Replay.from_json(data["replay"])  # type: ignore[arg-type]
            root = base64.b64decode(str(data["root"]), validate=True)
            origin, timestamp = data["origin"], data.get("timestamp")
            anchor_block = data.get("anchor_block", -1)  # absent: a file from before anchors
        except (KeyError, TypeError, EntryError) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(origin, str) or not (timestamp is None or type(timestamp) is int):
            raise ValueError("origin or timestamp has the wrong type")
        if type(anchor_block) is not int or anchor_block < -1:
            raise ValueError(f"anchor_block {anchor_block!r} is not a block number")
        if frontier.size != data["size"] or frontier.size != replay.size:
            raise ValueError(f"sizes disagree: {data['size']}, {frontier.size}, {replay.size}")
        if frontier.root() != root:
            raise ValueError("the stored compact range does not hash to the stored root")
        return cls(origin, frontier, replay, timestamp, anchor_block)


def load(path: Path, origin: str) -> State:
    """The state in ``path`` (a fresh one if there is no such file yet), for log ``origin``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State.empty(origin)
    except OSError as exc:
        raise Failure(ExitCode.USAGE, f"state file {path}: {exc}") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        state = State.from_json(data)
    except ValueError as exc:
        raise Failure(ExitCode.USAGE, f"state file {path} is not a verifier state: {exc}") from None
    if state.origin != origin:
        raise Failure(
            ExitCode.WRONG_LOG,
            f"state file {path} is for the log {state.origin!r}, not {origin!r}",
        )
    return state


def save(path: Path, state: State) -> None:
    """Replaces ``path`` with ``state``, atomically: a crash leaves the old file or the new."""
    data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
    directory = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # the rename itself is durable once the directory is synced
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
