"""The PvP benchmark's load (``ops/bench/pvp.py``): the trades it submits and the wait for them
to settle.

Every trade is the same DT/AED PvP between the harness's funded accounts (``KZT`` minor units
against ``AED`` fils), so that a run's completion shows in the receivers' balances alone:
:func:`wait_settled` polls two totals, not each PvP, and adds no per-PvP load while the clock
runs. :class:`Submitter` posts them as a burst (capacity) or open loop at a steady rate
(latency), and keeps when each was sent.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.messaging.posting import Posted, Poster
from tests.e2e.pvp.harness import (
    AED_PAYER,
    AED_RECEIVER,
    CB_WALLET,
    DT_BANK,
    DT_WALLET,
    FX_BANK,
    PvPProcesses,
)

KZT, AED = 1_00, 1
"""Each trade's two amounts, in minor units: what the receivers' totals grow by per PvP."""


def trade_body(pvp_id: str, deadline_s: float) -> dict[str, Any]:
    """``POST /v1/trades``'s body for one PvP, its value time ``deadline_s`` from now."""
    return {
        "pvp_id": pvp_id,
        "value_time": (datetime.now(UTC) + timedelta(seconds=deadline_s)).isoformat(),
        "a": {
            "bic": DT_BANK,
            "currency": "KZT",
            "amount": KZT,
            "account": DT_WALLET,
            "receive_account": AED_RECEIVER,
        },
        "b": {
            "bic": FX_BANK,
            "currency": "AED",
            "amount": AED,
            "account": AED_PAYER,
            "receive_account": CB_WALLET,
        },
    }


class Submitter:
    """Posts trades from a few threads over kept-alive connections, through libcurl like the
    product's own senders (httpx cost ~1.5 ms of the client's CPU per trade: a tenth of a
    core at 60 trades/s, taken from the two processes measured on the same two cores)."""

    def __init__(self, url: str, admin_token: str, threads: int = 4) -> None:
        self.url = url
        self.headers = {
            "Authorization": f"Bearer {admin_token}",
            "Content-Type": "application/json",
        }
        self.poster = Poster(timeout=60, max_connections=threads)
        self.pool = ThreadPoolExecutor(threads)
        self.sent: dict[str, float] = {}
        self.failed = 0

    def _json_post(self, path: str, body: Any) -> Posted:
        return self.poster.post(self.url + path, json.dumps(body).encode(), self.headers)

    def _post(self, pvp_id: str, deadline_s: float) -> None:
        t0 = time.time()
        resp = self._json_post("/v1/trades", trade_body(pvp_id, deadline_s))
        if resp.status_code != 201:
            self.failed += 1
            print(f"trade refused: {resp.status_code} {resp.text[:200]}", file=sys.stderr)
            return
        self.sent[pvp_id] = t0

    def _post_bulk(self, pvp_ids: list[str], deadline_s: float) -> None:
        t0 = time.time()
        body = {"trades": [trade_body(i, deadline_s) for i in pvp_ids]}
        resp = self._json_post("/v1/trades/bulk", body)
        if resp.status_code != 201:
            self.failed += len(pvp_ids)
            print(f"trades refused: {resp.status_code} {resp.text[:200]}", file=sys.stderr)
            return
        for pvp_id in pvp_ids:
            self.sent[pvp_id] = t0

    def burst(self, n: int, deadline_s: float, chunk: int = 1) -> list[str]:
        """``n`` trades as fast as the connector takes them: one per ``POST /v1/trades``, or
        ``chunk`` per ``POST /v1/trades/bulk``."""
        ids = [f"PVPB{uuid.uuid4().hex[:24]}" for _ in range(n)]
        if chunk <= 1:
            list(self.pool.map(lambda i: self._post(i, deadline_s), ids))
        else:
            parts = [ids[k : k + chunk] for k in range(0, n, chunk)]
            list(self.pool.map(lambda part: self._post_bulk(part, deadline_s), parts))
        return ids

    def steady(self, rate: float, seconds: float, deadline_s: float) -> list[str]:
        """Open loop: one trade every 1/rate seconds, whatever the answers' speed."""
        n = int(rate * seconds)
        ids = [f"PVPS{uuid.uuid4().hex[:24]}" for _ in range(n)]
        start = time.monotonic()
        futures = []
        for k, pvp_id in enumerate(ids):
            due = start + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self.pool.submit(self._post, pvp_id, deadline_s))
        for f in futures:
            f.result()
        return ids


def received(world: PvPProcesses) -> tuple[int, int]:
    """The receivers' totals so far: the AED receiver's available AED, the central bank
    wallet's posted DT."""
    return world.aed(AED_RECEIVER)["available"], world.wallet(CB_WALLET)["posted"]


def wait_settled(world: PvPProcesses, expect_aed: int, expect_kzt: int, timeout: float) -> None:
    """Until the receivers' totals reach the expected ones (every PvP of a run settled)."""
    end = time.monotonic() + timeout
    while True:
        aed, kzt = received(world)
        if aed >= expect_aed and kzt >= expect_kzt:
            return
        if time.monotonic() > end:
            raise SystemExit(f"not settled in {timeout}s: AED {aed}/{expect_aed}, DT {kzt}")
        time.sleep(0.05)
