"""Limits on what a client may make the server hold before a request reaches the app.

uvicorn's httptools protocol reads a request head for as long as the client takes and as
large as the client makes it: llhttp has no size limit of its own, and uvicorn arms no timer
until a first response is sent. So 50 clients that open connections and send a header byte
now and then hold 50 connections (and their buffers) for ever ("slowloris"). This protocol
adds, per connection:

- a limit on the size of a request head (request line and headers, ``max_head_bytes``):
  beyond it the request is answered ``431`` and the connection closed;
- a deadline for the whole head (``head_timeout``), from the connection's opening or the
  request's first byte: past it the request is answered ``408`` and the connection closed;
- a deadline between two pieces of a request body (``body_idle_timeout``) while the app waits
  for it: past it the app sees the client gone and the connection is closed (with ``408``
  if no answer has started).

Between requests on a kept-alive connection, uvicorn's own ``timeout_keep_alive`` applies.
Answers are problem documents like the apps' own (``code``: ``HEADERS_TOO_LARGE``,
``REQUEST_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_head_bytes: int = 16 * 1024
    """Request line and headers together, in bytes."""
    head_timeout: float = 10.0
    """Seconds from a connection's opening (or a request's first byte) to its last header."""
    body_idle_timeout: float = 30.0
    """Seconds the app may wait for the next piece of a request body."""
    keep_alive: int = 5
    """Seconds an idle kept-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""


DEFAULT_LIMITS = HttpLimits()

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _answer(status: int, code: str, detail: str) -> bytes:
    body = json.dumps(
        {
            "type": "https://dt-gateway.example/problems/" + code.lower(),
            "title": _REASONS[status],
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _HeadTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HttpLimits` (set by :func:`protocol_class`)."""

    limits = DEFAULT_LIMITS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        """Whether the bytes that arrive belong to a request head (or to the next one)."""
        self._received = 0
        """Bytes received since the last head ended: an unfinished header is counted here."""
        self._parsed = 0
        """Bytes of the current head that the parser has handed over."""
        self._too_large = False
        self._refusing = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return
        if self._in_head:
            self._received += len(data)
        elif self._body_timer is not None:
            self._arm_body_timer()
        super().data_received(data)
        # llhttp keeps a header until it is whole: an endless one never reaches on_header.
        if self._in_head and self._received > self.limits.max_head_bytes:
            self._refuse_head()

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._parsed = 0
        if self._head_timer is None:  # else the connection's first deadline still runs
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._received = 0
        self._cancel(self._head_timer)
        self._head_timer = None
        super().on_headers_complete()
        if self._has_body():
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:  # raised by _count, inside the parser
            self._refuse_head()
        else:
            super().send_400_response(msg)

    # ---------------------------------------------------------------- limits

    def _count(self, n: int) -> None:
        self._parsed += n
        if self._parsed > self.limits.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"", b"0")
            if name == b"transfer-encoding":
                return True
        return False

    def _refuse_head(self) -> None:
        limit = self.limits.max_head_bytes
        self._refuse(431, "HEADERS_TOO_LARGE", f"the request line and headers exceed {limit} bytes")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            seconds = self.limits.head_timeout
            self._refuse(408, "REQUEST_TIMEOUT", f"the request head took over {seconds:g} s")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        # The app waiting for the body is told that the client is gone.
        cycle.disconnected = True
        cycle.message_event.set()
        if cycle.response_started:
            self.transport.close()
        else:
            seconds = self.limits.body_idle_timeout
            self._refuse(408, "REQUEST_TIMEOUT", f"no body data for {seconds:g} s")

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._refusing = True
        self._cancel_timers()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # The answer to an earlier request is on its way: close after it, not inside it.
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.logger.info("refused a request: %s", detail)
        self.transport.write(_answer(status, code, detail))
        self.transport.close()

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.limits.body_idle_timeout, self._body_timed_out)

    def _cancel_timers(self) -> None:
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def protocol_class(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for ``limits``."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


__all__ = ["DEFAULT_LIMITS", "HttpLimits", "LimitedHttpToolsProtocol", "protocol_class"]
