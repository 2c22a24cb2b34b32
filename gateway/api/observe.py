"""Every HTTP request, timed and named: a request id, and counts and latencies by route.

:class:`Observed` wraps an app's whole ASGI handler (outside its router and exception
handlers, so refusals, unknown paths and the bare ASGI routes are seen too):

- the request id is the client's ``X-Request-Id`` when it is a sane token (at most 64 of
  ``A-Z a-z 0-9 . _ : -``), else one made here; it is bound for the request's log records
  (:mod:`gateway.logcontext`) and sent back as ``X-Request-Id``;
- :class:`HttpStats` counts each answered request by method, route template (not the raw
  path: ``/v1/pvp/{ref:str}``, so one series per route) and status, and its latency in a
  histogram by method and route. It is updated only by the event loop's thread, with a list
  index and an addition: no lock.

All of it costs a request 2 to 3 µs of CPU, most of it the extra coroutine layer any ASGI
wrapper adds; a PvP message at the door costs the gateway some hundreds.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gateway.logcontext import pop, push

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "(unmatched)"
"""The route of a request no route matched (a 404 from the router): raw paths would make a
series per path anyone cares to ask for."""

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,64}$")
_PREFIX = secrets.token_hex(4)
_SEQUENCE = itertools.count(1)


def new_request_id() -> str:
    """Unique within this process's life and very likely across replicas: a random prefix
    per process and a counter."""
    return f"{_PREFIX}-{next(_SEQUENCE):x}"


class HttpStats:
    """Requests and latencies by route (see the module docstring)."""

    def __init__(self) -> None:
        # (method, route) -> [count in each bucket ..., count above the last bucket, sum]
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._status: dict[tuple[str, str, int], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        row = self._latency.get(key)
        if row is None:
            row = self._latency[key] = [0.0] * (len(BUCKETS) + 2)
        row[bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds
        skey = (method, route, status)
        self._status[skey] = self._status.get(skey, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "dtg_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), n in sorted(dict(self._status).items()):
            requests.add_metric([method, route, str(status)], n)
        latency = HistogramMetricFamily(
            "dtg_http_request_seconds",
            "Time from a request's arrival to the end of its answer, by method and route",
            labels=["method", "route"],
        )
        for (method, route), row in sorted(dict(self._latency).items()):
            counts = list(row)  # a copy: the loop's thread goes on counting meanwhile
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound_, count in zip((*map(str, BUCKETS), "+Inf"), counts[:-1], strict=True):
                cumulative += count
                buckets.append((bound_, cumulative))
            latency.add_metric([method, route], buckets, sum_value=counts[-1])
        yield requests
        yield latency


class Observed:
    """The ASGI wrapper of the module docstring."""

    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.match(value):
                    request_id = value.decode("ascii")
                break
        request_id = request_id or new_request_id()
        header = (b"x-request-id", request_id.encode("ascii"))
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(header)
                message["headers"] = headers
            await send(message)

        token = push(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            pop(token)
            if status:  # else the client left before an answer began
                route: Any = scope.get("path_template") or UNMATCHED
                method = str(scope.get("method", ""))
                self.stats.observe(method, route, status, time.perf_counter() - started)


__all__ = ["BUCKETS", "UNMATCHED", "HttpStats", "Observed", "new_request_id"]
