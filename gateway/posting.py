"""POSTs on pooled keep-alive connections, for the senders of the PvP hot path.

The gateway's outbox dispatchers and the connector's delivery lanes post one small body per
message and read a small answer. httpx spent ~0.4 ms of CPU per such request here, urllib3
~0.19 ms; a PvP makes four such posts across the two processes, and the wall time of each is
on a hop of the PvP's latency. Everything else keeps httpx.

One :class:`Poster` is shared by a sender's threads (urllib3's pools are thread-safe). No
retries and no redirects here: the callers own retrying (outbox backoff, redelivery). Every
failure to get an answer, whatever urllib3 calls it, is a :class:`PostFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError as _Urllib3Error

__all__ = ["PostFailed", "Posted", "Poster"]


class PostFailed(Exception):
    """No answer: connection refused or reset, timeout, malformed response."""


@dataclass(frozen=True, slots=True)
class Posted:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Poster:
    """POST to any URL over connections kept per host (at most ``max_connections`` idle each)."""

    def __init__(self, *, timeout: float, max_connections: int) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=32,
            maxsize=max(1, max_connections),
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Posted:
        try:
            response = self._pool.request(
                "POST", url, body=body, headers=dict(headers), redirect=False
            )
        except (_Urllib3Error, OSError) as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from exc
        return Posted(response.status, response.data)

    def close(self) -> None:
        self._pool.clear()
