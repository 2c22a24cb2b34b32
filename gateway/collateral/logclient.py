"""Reading the collateral log as served: its checkpoint, its entry bundles and its hash tiles.

Paths are those of C2SP tlog-tiles under ``<URL>/collateral/log/``. Nothing read here is
trusted: the checkpoint is opened with the pinned key, entries are hashed into the signed root,
tiles only serve to explain a mismatch (and are checked against the signed roots themselves).

Bundles are fetched concurrently by a small thread pool and handed out in log order, with at
most a few bundles held in memory, so that a log of millions of entries streams through.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from gateway.collateral import tlog
from gateway.collateral.verdict import ExitCode, Failure

WIDTH = tlog.TILE_WIDTH


class LogClient:
    """The log at ``url`` (e.g. ``http://127.0.0.1:8080``); errors are :class:`Failure`."""

    def __init__(self, url: str, client: httpx.Client, pool: ThreadPoolExecutor) -> None:
        self.base = url.rstrip("/") + "/collateral/log/"
        self._client = client
        self._pool = pool

    def get(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        """The body at ``path``; None if it is 404 and ``missing_ok``."""
        try:
            response = self._client.get(self.base + path)
        except httpx.HTTPError as exc:
            raise Failure(ExitCode.UNREACHABLE, f"GET {self.base}{path}: {exc}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            raise Failure(
                ExitCode.UNREACHABLE, f"GET {self.base}{path}: HTTP {response.status_code}"
            )
        return response.content

    def checkpoint(self) -> bytes:
        return self.get("checkpoint") or b""

    def tile(self, level: int, n: int, width: int | None) -> bytes:
        return self.get(tlog.tile_path(level, n, width)) or b""

    def bundle(self, n: int, width: int | None) -> list[bytes]:
        """The entries of bundle ``n`` (``width`` entries, None = 256). A partial bundle the log
        no longer serves is read from the full one, as tlog-tiles allows."""
        wanted = tlog.tile_path("entries", n, width)
        path, data = wanted, self.get(wanted, missing_ok=width is not None)
        if data is None:
            path = tlog.tile_path("entries", n)
            data = self.get(path) or b""
        try:
            entries = tlog.decode_bundle(data)
        except ValueError as exc:
            raise Failure(ExitCode.ROOT_MISMATCH, f"{path}: {exc}") from None
        expected = width if path == wanted and width else WIDTH
        if len(entries) != expected:
            raise Failure(
                ExitCode.ROOT_MISMATCH, f"{path}: holds {len(entries)} entries, expected {expected}"
            )
        return entries[: width or WIDTH]

    def entries(self, start: int, end: int, window: int = 16) -> Iterator[tuple[int, bytes]]:
        """``(index, entry)`` for every entry in ``start..end-1``, in order."""
        queue: deque[tuple[int, Future[list[bytes]]]] = deque()
        first, last = start // WIDTH, (end - 1) // WIDTH
        for n in range(first, last + 1) if end > start else ():
            width = None if (n + 1) * WIDTH <= end else end - n * WIDTH
            queue.append((n, self._pool.submit(self.bundle, n, width)))
            if len(queue) >= window:
                yield from _take(queue, start)
        while queue:
            yield from _take(queue, start)


def _take(queue: deque[tuple[int, Future[list[bytes]]]], start: int) -> Iterator[tuple[int, bytes]]:
    n, future = queue.popleft()
    for offset, entry in enumerate(future.result()):
        index = n * WIDTH + offset
        if index >= start:
            yield index, entry
