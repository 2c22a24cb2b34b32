"""Is this replica ready to serve? The checks behind ``GET /ready``.

- ``database``: reachable, and its schema at the newest migration the code knows;
- ``chain``: the JSON-RPC node answers (when the stablecoin runs);
- ``connector``: the connector answers ``connector.url`` + ``readiness.connector_path`` below
  500 (when PvP runs, that is when a connector certificate is pinned);
- ``collateral_checkpoint``: the newest checkpoint of the collateral log was signed less than
  ``readiness.checkpoint_max_age_seconds`` ago (when the log is kept).

Each probe runs on a small pool of threads and gets ``readiness.probe_timeout_seconds``: a
dependency that hangs makes the replica not ready, never the probe hang. A probe still running
from an earlier call is waited for again rather than started twice, and the verdict is reused
for ``readiness.cache_seconds``, so load balancers probing often cost the dependencies little.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.collateral.runtime import CollateralLog
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import Settings
from gateway.db import schema_revisions, utcnow
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks.values())


Probe = Callable[[], Check]


class Readiness:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        stablecoin: Stablecoin | None = None,
        collateral: CollateralLog | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.timeout = settings.readiness.probe_timeout_seconds
        self.cache_seconds = settings.readiness.cache_seconds
        self._head: str | None = None
        self.probes: dict[str, Probe] = {"database": self.database}
        if stablecoin is not None:
            chain = stablecoin.chain
            self.probes["chain"] = lambda: Check(True, f"block {chain.block_number()}")
        if settings.iso20022.connector_cert_pem:
            self.probes["connector"] = self.connector
        if collateral is not None:
            self.probes["collateral_checkpoint"] = lambda: self.checkpoint(collateral)
        self._pool = ThreadPoolExecutor(max_workers=len(self.probes), thread_name_prefix="ready")
        self._running: dict[str, Future[Check]] = {}
        self._lock = threading.Lock()
        self._last: tuple[float, Verdict] | None = None
        self._http = httpx.Client(timeout=self.timeout)

    def verdict(self) -> Verdict:
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last[0] < self.cache_seconds:
                return last[1]
            futures = {name: self._start(name, probe) for name, probe in self.probes.items()}
            deadline = time.monotonic() + self.timeout
            checks = {name: self._result(f, deadline) for name, f in futures.items()}
            verdict = Verdict(checks)
            self._last = (time.monotonic(), verdict)
            return verdict

    def _start(self, name: str, probe: Probe) -> Future[Check]:
        running = self._running.get(name)
        if running is None or running.done():
            running = self._running[name] = self._pool.submit(_guarded, probe)
        return running

    @staticmethod
    def _result(future: Future[Check], deadline: float) -> Check:
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return Check(False, "no answer in time")

    # ---------------------------------------------------------------- probes

    @property
    def head(self) -> str:
        """The newest migration the code knows (read from the migration scripts once)."""
        if self._head is None:
            self._head = schema_revisions(self.engine)[1]
        return self._head

    def database(self) -> Check:
        head = self.head
        with self.engine.connect().execution_options(dt_readonly=True) as conn:
            current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        if current != head:
            return Check(False, f"schema at {current or 'nothing'}, the code needs {head}")
        return Check(True, f"schema at {current}")

    def connector(self) -> Check:
        url = self.settings.connector.url.rstrip("/") + self.settings.readiness.connector_path
        status = self._http.get(url).status_code
        return Check(status < 500, f"{url} answered {status}")

    def checkpoint(self, clog: CollateralLog) -> Check:
        with CollateralUnitOfWork(self.engine, readonly=True) as uow:
            newest = uow.collateral.latest_checkpoint(clog.wallet_id)
        if newest is None:
            return Check(False, "no checkpoint signed yet")
        age = (utcnow() - newest.signed_at).total_seconds()
        limit = self.settings.readiness.checkpoint_max_age_seconds
        detail = f"size {newest.size}, signed {age:.1f} s ago (limit {limit:g} s)"
        return Check(age < limit, detail)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()


def _guarded(probe: Probe) -> Check:
    try:
        return probe()
    except Exception as exc:  # the dependency is down: that is the answer, not an error
        if isinstance(exc, GatewayError) and not exc.detail_is_public:
            return Check(False, f"unreachable: {type(exc).__name__}: {exc.title}")
        text = str(exc).splitlines()[0][:200] if str(exc) else ""
        return Check(False, f"unreachable: {type(exc).__name__}{': ' + text if text else ''}")


__all__ = ["Check", "Readiness", "Verdict"]
