"""POSTs on kept-alive connections, for the senders of the PvP hot path.

The gateway's outbox dispatchers and the connector's delivery lanes post one small body per
message and read a small answer; a PvP makes four such posts across the two processes, and
each is a hop of the PvP's latency. libcurl (through pycurl) does one in ~25 µs of CPU on
this machine, urllib3 in ~180 µs and httpx in ~400 µs (the HTTP layer, headers parsed in
Python, was the largest item left in the connector's profile). Everything else keeps httpx.

A :class:`Poster` is shared by a sender's threads: each post borrows a curl handle (a handle
keeps its connection open for the next post to the same host) and gives it back; at most
``max_connections`` idle handles are kept. No retries and no redirects here: the callers own
retrying (outbox backoff, redelivery). Every failure to get an answer, whatever libcurl calls
it, is a :class:`PostFailed`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import pycurl

__all__ = ["PostFailed", "Posted", "Poster"]


class PostFailed(Exception):
    """No answer: connection refused or reset, timeout, malformed URL or response."""


@dataclass(frozen=True, slots=True)
class Posted:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Poster:
    """POST to any URL over connections kept open between posts."""

    def __init__(self, *, timeout: float, max_connections: int) -> None:
        self._timeout_ms = max(1, int(timeout * 1000))
        self._max_idle = max(1, max_connections)
        self._idle: list[pycurl.Curl] = []
        self._lock = threading.Lock()
        self._closed = False

    def _handle(self) -> pycurl.Curl:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)  # threads: no SIGALRM for timeouts
        curl.setopt(pycurl.POST, 1)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.PROXY, "")  # the URL as given, never a proxy from the environment
        curl.setopt(pycurl.NOPROXY, "*")
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        return curl

    def _give_back(self, curl: pycurl.Curl) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(curl)
                return
        curl.close()

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Posted:
        curl = self._handle()
        chunks: list[bytes] = []
        try:
            curl.setopt(pycurl.URL, url)
            # "Expect:" off: libcurl would otherwise wait for a 100 Continue before a body
            # over 1 KiB, a round trip (or a second's stall) for nothing.
            curl.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()] + ["Expect:"])
            curl.setopt(pycurl.POSTFIELDS, body)
            curl.setopt(pycurl.WRITEFUNCTION, chunks.append)
            curl.perform()
            status = int(curl.getinfo(pycurl.RESPONSE_CODE))
        except pycurl.error as exc:
            curl.close()  # its connection is in an unknown state
            raise PostFailed(f"curl error {exc.args[0]}: {exc.args[-1]}") from exc
        except BaseException:
            curl.close()
            raise
        self._give_back(curl)
        return Posted(status, b"".join(chunks))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for curl in idle:
            curl.close()
