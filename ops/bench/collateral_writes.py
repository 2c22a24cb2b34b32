"""The proof-of-collateral benchmark's write side (``ops/bench/collateral.py``): how fast the
log takes entries and how long a transfer waits to be in a checkpoint.

- :func:`bench_append`: entries sequenced into the tree per second, from a pool;
- :func:`bench_pool_and_lag`: ledger transfers pooling their entries per second from concurrent
  clients, then the lag from a transfer's commit to the first signed checkpoint holding it;
- :func:`bench_cosigned_lag`: the same lag to the checkpoint served, as a replica serves it,
  with a local witness's cosignature.

A lag is taken per transfer, from its commit to the first checkpoint seen at or after it whose
size includes it (:func:`lag_quantiles`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collateral_logs import (
    SEG,
    collateral_log,
    drain,
    engine_at,
    open_wallets,
    pool_bodies,
    uow_factory,
)
from sqlalchemy.engine import Engine

from gateway.collateral import service, witnessing
from gateway.collateral.note import NoteError, Signer, Verifier, open_note
from gateway.ledger import service as ledger
from gateway.ledger.group import GroupCommitter
from gateway.ledger.model import MakeTransfer
from gateway.ledger.store import LedgerUnitOfWork


def lag_quantiles(
    committed: list[float], seen: list[tuple[int, float]], base: int
) -> tuple[float, float]:
    """p50 and p95 ms from each commit to the first checkpoint that includes it: the ``k``-th
    transfer committed (at ``committed[k]``) is in a checkpoint of size over ``base + k``,
    first ``seen`` (size, when) at or after its commit."""
    lags = []
    for k, at in enumerate(committed):
        first = next(t for size, t in seen if size > base + k and t >= at)
        lags.append((first - at) * 1000)
    lags.sort()
    return lags[len(lags) // 2], lags[int(len(lags) * 0.95)]


def bench_append(tmp: Path, signer: Signer, n: int = 200_000) -> float:
    """Entries per second sequenced, durably, in batches of 5,000 from a pool of ``n``."""
    engine = engine_at(tmp / "append.db")
    open_wallets(engine, 0)
    pool_bodies(engine, 0, n)
    clog = collateral_log(signer, batch_limit=5000)
    t0 = time.perf_counter()
    assert drain(engine, clog) == n
    rate = n / (time.perf_counter() - t0)
    engine.dispose()
    return rate


def bench_pool_and_lag(tmp: Path, signer: Signer, seconds: float, rate: float) -> dict[str, float]:
    """Entries pooled per second by 8 clients for ``seconds``; then the lag to a signed
    checkpoint at ``rate`` transfers a second, the integrator at its default period."""
    engine = engine_at(tmp / "lag.db")
    clients = 8
    open_wallets(engine, clients)
    committer = GroupCommitter(lambda: LedgerUnitOfWork(engine))

    # Pool throughput: 8 clients, each transfer its own transaction (grouped commits).
    count = {"n": 0}
    stop_at = time.perf_counter() + seconds

    def client(c: int) -> None:
        i = 0
        while time.perf_counter() < stop_at:
            op = MakeTransfer(
                id=f"p-{c}-{i}", debit_wallet_id=f"x-{c}", credit_wallet_id=SEG, amount=1
            )
            committer.submit(op)
            i += 1
        count["n"] += i

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool_rate = count["n"] / (time.perf_counter() - t0)
    clog = collateral_log(signer, batch_limit=5000)
    drain(engine, clog)
    base = service.integrate(uow_factory(engine), clog).size

    # Lag: transfers at ``rate`` a second, the integrator every integrate_seconds.
    integrated: list[tuple[int, float]] = []
    done = threading.Event()

    def integrator() -> None:
        while not done.is_set():
            r = service.integrate(uow_factory(engine), clog)
            integrated.append((r.size, time.perf_counter()))
            time.sleep(clog.settings.integrate_seconds)

    it = threading.Thread(target=integrator)
    it.start()
    committed = paced_transfers(engine, "l", seconds, rate)
    while not integrated or integrated[-1][0] < base + len(committed):
        time.sleep(0.05)
    done.set()
    it.join()
    committer.stop()
    p50, p95 = lag_quantiles(committed, integrated, base)
    engine.dispose()
    return {
        "pool_entries_per_s": pool_rate,
        "checkpoint_lag_p50_ms": p50,
        "checkpoint_lag_p95_ms": p95,
    }


def paced_transfers(engine: Engine, prefix: str, seconds: float, rate: float) -> list[float]:
    """Transfers into the segregated wallet, one at a time at ``rate`` a second for
    ``seconds`` (ids ``<prefix>-<n>``); when each committed (``time.perf_counter``)."""
    committed: list[float] = []
    start = time.perf_counter()
    for i in range(int(seconds * rate)):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        ledger.apply_one(
            LedgerUnitOfWork(engine),
            MakeTransfer(id=f"{prefix}-{i}", debit_wallet_id="x-0", credit_wallet_id=SEG, amount=1),
        )
        committed.append(time.perf_counter())
    return committed


@contextmanager
def witness_process(data: Path, log_vkey: str) -> Iterator[dict[str, str]]:
    """A ``dt-gateway witness`` on this machine following the log; yields what it printed."""
    binary = Path(sys.executable).parent / "dt-gateway"
    proc = subprocess.Popen(
        [str(binary), "witness", "--port", "0", "--data", str(data), "--log", log_vkey],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)


def bench_cosigned_lag(tmp: Path, signer: Signer, seconds: float, rate: float) -> dict[str, float]:
    """The lag to a checkpoint served with a local witness's cosignature, at ``rate``
    transfers a second, the integrator and the witnessing job at their default periods."""
    engine = engine_at(tmp / "cosigned.db")
    open_wallets(engine, 1)
    with witness_process(tmp / "witness", signer.vkey()) as w:
        clog = collateral_log(signer, witnesses=[{"url": w["url"], "vkey": w["vkey"]}])
        key = (signer.verifier(), Verifier.from_vkey(w["vkey"]))
        transport = witnessing.HttpTransport(clog.settings.witness_timeout_seconds)
        served: list[tuple[int, float]] = []  # (size, when first served cosigned)
        done = threading.Event()

        def every(period: float, fn: Any) -> None:
            while not done.is_set():
                fn()
                time.sleep(period)

        def integrator() -> None:
            service.integrate(uow_factory(engine), clog)

        def witness_job() -> None:
            witnessing.submit(uow_factory(engine), clog, transport)

        def replica() -> None:
            """What GET /collateral/log/checkpoint answers, looked at every 2 ms."""
            seen = None
            while not done.is_set():
                try:
                    note, size = service.checkpoint(uow_factory(engine), clog)
                except service.LogNotReady:  # the integrator has not signed one yet
                    time.sleep(0.002)
                    continue
                if note != seen:
                    seen = note
                    try:
                        cosigned = len(open_note(note, key).verified) == 2
                    except NoteError:
                        cosigned = False
                    if cosigned and (not served or size > served[-1][0]):
                        served.append((size, time.perf_counter()))
                time.sleep(0.002)

        threads = [
            threading.Thread(target=every, args=(clog.settings.integrate_seconds, integrator)),
            threading.Thread(target=every, args=(clog.settings.witness_seconds, witness_job)),
            threading.Thread(target=replica),
        ]
        for t in threads:
            t.start()
        try:
            while not served:
                time.sleep(0.05)
            base = served[-1][0]
            committed = paced_transfers(engine, "c", seconds, rate)
            while served[-1][0] < base + len(committed):
                time.sleep(0.05)
        finally:
            done.set()
            for t in threads:
                t.join()
            transport.close()
    p50, p95 = lag_quantiles(committed, served, base)
    engine.dispose()
    return {
        "cosigned_checkpoint_lag_p50_ms": p50,
        "cosigned_checkpoint_lag_p95_ms": p95,
    }
