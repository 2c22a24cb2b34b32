"""PvP benchmark: DT/AED PvPs per second end to end, and latency, between the real processes.

Starts ``dt-gateway connector`` (with its simulated AED bank) and ``dt-gateway serve`` as
subprocesses on SQLite files (durable settings: WAL, FULL durability by group commit), wired as in
``tests/e2e/pvp`` (whose harness this reuses), then:

- unbatched capacity: a burst of trades (``POST /v1/trades``, several submitters); PvPs/s =
  PvPs / (last leg settled - first trade submitted);
- latency at half that rate: trades submitted open loop at a steady rate; per PvP, from the
  trade request to both legs settled, each as its own ledger recorded it: the DT leg in the
  gateway's settling transaction (the leg's time in ``GET /v1/pvp/{id}``), the AED leg in the
  simulated bank's (its ACSC in the connector's log, written in that transaction); p50 / p99.
  Also the same to the connector's record of the gateway's ACSC (the settlement confirmed to
  the orchestrator, one hop more), and the split by step from the connector's message log
  (the trade to its pacs.009s; per network, its pacs.009 to its lock and the decision to its
  settlement);
- batched capacity: the connector restarted with ``batch_max`` > 1, so the pacs.009 to each
  network carry many transactions (and the gateway locks them in one ledger batch).

Completion is detected from balances (the receivers' totals), so polling adds no per-PvP
load while the clock runs. Each process runs on a core of its own (the gateway on the first
CPU, the connector on the second: ``cpus``, ``connector.cpus``), as each would on its own
machine; ``--no-pin`` lets the operating system place them.

``--db postgresql`` runs both processes on PostgreSQL instead, each on a fresh database created
and dropped here, and prints per PvP the statements and round trips of each process, counted
in its driver (``ops/bench/pgcount.py``), and the CPU of their PostgreSQL backends
(``ops/bench/pgmeter.py``). With ``--replicas N`` it ends with an unbatched burst through N
gateway replicas on the one database, behind a TCP balancer (``ops/bench/replicas.py``), and
the conservation check after it. Usage:

    .venv/bin/python ops/bench/pvp.py [--burst N] [--batched-burst N] [--seconds S]
        [--latency-rate R] [--no-pin] [--db sqlite|postgresql] [--replicas N]
        [--pg-admin-url URL]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.config import ConnectorSettings
from gateway.messaging.posting import Posted, Poster
from gateway.sqlite.walsync import SLOW_FSYNC_SECONDS, slow_fsync_reports

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgcount  # noqa: E402
from pgmeter import PgMeter, cpu_s  # noqa: E402
from replicas import Replicas  # noqa: E402

from tests.e2e.pvp.harness import (  # noqa: E402
    AED_PAYER,
    AED_RECEIVER,
    CB_WALLET,
    DT_BANK,
    DT_WALLET,
    FX_BANK,
    GATEWAY_BIC,
    PvPProcesses,
)

KZT, AED = 1_00, 1
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _trade_body(pvp_id: str, deadline_s: float) -> dict[str, Any]:
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
        resp = self._json_post("/v1/trades", _trade_body(pvp_id, deadline_s))
        if resp.status_code != 201:
            self.failed += 1
            print(f"trade refused: {resp.status_code} {resp.text[:200]}", file=sys.stderr)
            return
        self.sent[pvp_id] = t0

    def _post_bulk(self, pvp_ids: list[str], deadline_s: float) -> None:
        t0 = time.time()
        body = {"trades": [_trade_body(i, deadline_s) for i in pvp_ids]}
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


def _wait_settled(world: PvPProcesses, expect_aed: int, expect_kzt: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while True:
        aed = world.aed(AED_RECEIVER)["available"]
        kzt = world.wallet(CB_WALLET)["posted"]
        if aed >= expect_aed and kzt >= expect_kzt:
            return
        if time.monotonic() > end:
            raise SystemExit(f"not settled in {timeout}s: AED {aed}/{expect_aed}, DT {kzt}")
        time.sleep(0.05)


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _trail(world: PvPProcesses, pvp_id: str) -> list[tuple[str, str, str, float]]:
    """The PvP's messages as the connector logged them once both legs settled:
    (direction, peer BIC, message, at) in order."""
    end = time.monotonic() + 30
    view = world.connector_pvp(pvp_id)
    while view["state"] == "committed" and time.monotonic() < end:
        # Both ledgers moved; the connector may not have recorded the last ACSC yet.
        time.sleep(0.05)
        view = world.connector_pvp(pvp_id)
    if view["state"] != "settled":
        raise SystemExit(f"PvP {pvp_id} ended {view['state']}: {view['decision']}")
    return [
        (m["direction"], m["peer_bic"], m["message"], _at(m["at"]))
        for m in world.connector_messages(pvp_id)
    ]


def _settled_at(trail: list[tuple[str, str, str, float]]) -> float:
    """When the connector recorded the last ACSC of the PvP (both legs settled)."""
    return max(at for d, _, name, at in trail if d == "in" and name.startswith("pacs.002"))


def _dt_settled_at(world: PvPProcesses, pvp_id: str) -> float:
    """When the gateway settled the PvP's DT leg: the leg's time, set by the transaction
    that settled it (a settled leg never changes again)."""
    legs = [leg for leg in world.gateway_pvp(pvp_id)["legs"] if leg["state"] == "settled"]
    if not legs:
        raise SystemExit(f"PvP {pvp_id}: the gateway has no settled DT leg")
    return max(_at(leg["updated_at"]) for leg in legs)


def _legs_settled_at(trail: list[tuple[str, str, str, float]], dt_settled: float) -> float:
    """When the later of the two legs settled: the DT leg at ``dt_settled``, each other
    network's when it reported ACSC (its second status in the connector's log; the simulated
    bank's is written in the transaction that settles it)."""
    ins: dict[str, list[float]] = {}
    for direction, peer, name, at in trail:
        if direction == "in" and name.startswith("pacs.002") and peer != GATEWAY_BIC:
            ins.setdefault(peer, []).append(at)
    return max([dt_settled, *(ats[1] for ats in ins.values())])


def _steps(trail: list[tuple[str, str, str, float]], t0: float) -> dict[str, float]:
    """Where a PvP's time went, in ms, from the connector's log: the trade to its pacs.009s,
    then per network its pacs.009 to its ACSP (the lock) and the decision to its ACSC (the
    settlement). The decision is made in the transaction that processes the second ACSP."""
    outs: dict[str, list[float]] = {}
    ins: dict[str, list[float]] = {}
    for direction, peer, _name, at in trail:
        (outs if direction == "out" else ins).setdefault(peer, []).append(at)
    steps = {"trade -> pacs.009s": (min(o[0] for o in outs.values()) - t0) * 1000}
    for peer in sorted(outs):
        steps[f"{peer} pacs.009 -> ACSP"] = (ins[peer][0] - outs[peer][0]) * 1000
        steps[f"{peer} decision -> ACSC"] = (ins[peer][1] - outs[peer][1]) * 1000
    return steps


def machine_reference(rounds: int = 300) -> float:
    """CPU µs to sign one single-transaction pacs.009 envelope with signxml.

    Printed first so that runs can be compared: this VM's speed drifts by 30-40 % over an
    hour (neighbours, frequency), which no change in the code explains. It is a fixed
    yardstick: signxml, as the product signed until it got its own fixed-shape signer, so
    figures stay comparable across versions of the product."""
    from lxml import etree
    from samples import fx_pacs009
    from signxml import XMLSigner  # type: ignore[attr-defined]

    from gateway.iso20022.codec import build, header_for
    from gateway.pvp.keys import generate

    identity = generate("bench")
    msg = fx_pacs009()
    raw = build(msg, header_for(msg, from_bic="SWHQBEBB", to_bic="CBAUAEAA"))
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    cert = identity.cert_pem.decode("ascii")
    signer = XMLSigner(
        signature_algorithm="ecdsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    ds = "http://www.w3.org/2000/09/xmldsig#"

    def sign_once() -> None:
        root = etree.fromstring(raw)
        sgntr = etree.SubElement(root[0], f"{{{root[0].nsmap[None]}}}Sgntr")
        etree.SubElement(sgntr, f"{{{ds}}}Signature", Id="placeholder", nsmap={"ds": ds})
        etree.tostring(signer.sign(root, key=key, cert=cert))

    for _ in range(30):
        sign_once()
    start = time.process_time()
    for _ in range(rounds):
        sign_once()
    return (time.process_time() - start) / rounds * 1e6


def _stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds so far of a process or thread, from its /proc ``stat``."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_by_thread(pid: int) -> dict[str, tuple[str, float]]:
    """Per live thread of a process (by thread id): its group and CPU seconds so far. The
    group is its native name (``gateway.threads``) without the trailing ``-<n>``; the main
    thread (the event loop) is "main", the threads of libraries' pools (which bear the
    process's name) "unnamed"."""
    threads: dict[str, tuple[str, float]] = {}
    process_name = Path(f"/proc/{pid}/comm").read_text().strip()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu = _stat_cpu_s(task / "stat")
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended
            continue
        if task.name == str(pid):
            group = "main"
        elif name == process_name:
            group = "unnamed"
        else:
            group = re.sub(r"-\d+$", "", name)
        threads[task.name] = (group, cpu)
    return threads


def _busy_by_thread(
    before: dict[str, tuple[str, float]],
    after: dict[str, tuple[str, float]],
    process_cpu: float,
    seconds: float,
) -> str:
    """The groups' shares of one CPU between two :func:`_cpu_by_thread`, busiest first.
    ``process_cpu``, the process's CPU seconds meanwhile, also counts the threads that ended
    in between (a library's pool lets idle threads go): what the live threads do not account
    for is theirs, shown as "ended"."""
    used: dict[str, float] = {}
    for tid, (group, cpu) in after.items():
        used[group] = used.get(group, 0.0) + cpu - before.get(tid, (group, 0.0))[1]
    used["ended"] = process_cpu - sum(used.values())
    shares = {g: 100 * v / seconds for g, v in used.items()}
    ranked = sorted(((s, g) for g, s in shares.items() if s >= 0.5), reverse=True)
    return ", ".join(f"{g} {s:.0f} %" for s, g in ranked) or "none over 0.5 %"


def _pids(world: PvPProcesses, replicas: Replicas | None = None) -> dict[str, list[int]]:
    """Each party's processes: the gateway's replicas (one, unless ``replicas`` were added)
    and the connector."""
    assert world.gateway.proc is not None and world.connector.proc is not None
    gateways = replicas.pids() if replicas is not None else [world.gateway.proc.pid]
    return {"gateway": gateways, "connector": [world.connector.proc.pid]}


def _cpu_all(pids: dict[str, list[int]]) -> dict[str, float]:
    cpu = {party: sum(cpu_s(pid) for pid in party_pids) for party, party_pids in pids.items()}
    return cpu | {"bench": sum(os.times()[:2])}


def run_burst(
    world: PvPProcesses,
    sub: Submitter,
    n: int,
    label: str,
    chunk: int = 1,
    pg: PgMeter | None = None,
    replicas: Replicas | None = None,
) -> float:
    aed0, kzt0 = world.aed(AED_RECEIVER)["available"], world.wallet(CB_WALLET)["posted"]
    pids = _pids(world, replicas)
    pg0 = pg.snapshot(pids) if pg else None
    cpu0 = _cpu_all(pids)
    gateway0 = {pid: cpu_s(pid) for pid in pids["gateway"]}
    t0 = time.time()
    ids = sub.burst(n, deadline_s=300, chunk=chunk)
    t_sub = time.time() - t0
    _wait_settled(world, aed0 + n * AED, kzt0 + n * KZT, timeout=600)
    t_end = max(_settled_at(_trail(world, i)) for i in ids[-50:])  # the last ones settle last
    rate = n / (t_end - t0)
    cpu = {k: (v - cpu0[k]) * 1000 / n for k, v in _cpu_all(pids).items()}
    print(f"{label}: {n} PvPs in {t_end - t0:.2f} s (submitted in {t_sub:.2f} s): {rate:.0f}/s")
    print("  CPU ms per PvP: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    if replicas is not None:  # each replica's share: the balancer spread the connections
        split = [(cpu_s(pid) - gateway0[pid]) * 1000 / n for pid in pids["gateway"]]
        print("    by gateway replica: " + ", ".join(f"{ms:.1f}" for ms in split))
    if pg is not None and pg0 is not None:
        pg.report(pg0, pg.snapshot(pids), n)
    return rate


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _slow_fsyncs(log: Path, since: int) -> tuple[int, float]:
    """Slow fsyncs a process logged after byte ``since`` of its log: how many and the
    longest, in ms (``gateway.sqlite.walsync.slow_fsync_reports``)."""
    with log.open("rb") as fh:
        fh.seek(since)
        return slow_fsync_reports(fh.read().decode(errors="replace"))


def run_latency(
    world: PvPProcesses,
    sub: Submitter,
    rate: float,
    seconds: float,
    dump: Path | None = None,
    pg: PgMeter | None = None,
) -> tuple[float, float, dict[str, float]]:
    aed0, kzt0 = world.aed(AED_RECEIVER)["available"], world.wallet(CB_WALLET)["posted"]
    groups = _pids(world)
    pg0 = pg.snapshot(groups) if pg else None
    cpu0 = _cpu_all(groups)
    pids = {party: party_pids[0] for party, party_pids in groups.items()}
    threads0 = {name: _cpu_by_thread(pid) for name, pid in pids.items()}
    logs = {"gateway": world.gateway.log_path, "connector": world.connector.log_path}
    log_at = {name: log.stat().st_size for name, log in logs.items()}
    started = time.monotonic()
    ids = sub.steady(rate, seconds, deadline_s=60)
    _wait_settled(world, aed0 + len(ids) * AED, kzt0 + len(ids) * KZT, timeout=300)
    elapsed = time.monotonic() - started
    used = {k: v - cpu0[k] for k, v in _cpu_all(groups).items()}
    pg1 = pg.snapshot(groups) if pg else None
    threads1 = {name: _cpu_by_thread(pid) for name, pid in pids.items()}
    cpu = {k: v * 1000 / len(ids) for k, v in used.items()}
    trails = {i: _trail(world, i) for i in ids}
    dt_settled = {i: _dt_settled_at(world, i) for i in ids}
    lat = sorted((_legs_settled_at(trails[i], dt_settled[i]) - sub.sent[i]) * 1000 for i in ids)
    confirmed = sorted((_settled_at(trails[i]) - sub.sent[i]) * 1000 for i in ids)
    p50, p99 = statistics.median(lat), _pct(lat, 0.99)
    print(
        f"latency at {rate:.0f} PvP/s offered ({len(ids)} PvPs), trade to both legs settled: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"
    )
    print(
        "  to the settlement confirmed to the connector (its log of the gateway's ACSC): "
        f"p50 {statistics.median(confirmed):.1f} ms, p99 {_pct(confirmed, 0.99):.1f} ms, "
        f"max {confirmed[-1]:.1f} ms"
    )
    print("  CPU ms per PvP: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    per_pvp = pg.report(pg0, pg1, len(ids)) if pg and pg0 and pg1 else {}
    # A process's Python work runs a thread at a time: its share of one CPU is how busy
    # it was, and what its messages queue behind.
    print(
        "  busy (CPU time / run time, of one CPU): "
        + ", ".join(f"{k} {100 * v / elapsed:.0f} %" for k, v in used.items())
    )
    for name in pids:
        shares = _busy_by_thread(threads0[name], threads1[name], used[name], elapsed)
        print(f"    {name} by thread: {shares}")
    slow = {name: _slow_fsyncs(log, log_at[name]) for name, log in logs.items()}
    print(
        f"  fsyncs of the log over {SLOW_FSYNC_SECONDS * 1000:.0f} ms (the disk stalled, "
        "every commit of the process waited): "
        + ", ".join(f"{name} {n} (longest {ms:.0f} ms)" for name, (n, ms) in slow.items())
    )
    steps: dict[str, list[float]] = {}
    for i in ids:
        for name, ms in _steps(trails[i], sub.sent[i]).items():
            steps.setdefault(name, []).append(ms)
    if dump is not None:
        # Each PvP's trade time and its messages as the connector logged them, to look at
        # the tail over the run (one stall or spread out) after the fact.
        dump.write_text(
            json.dumps(
                [
                    {
                        "pvp_id": i,
                        "sent": sub.sent[i],
                        "dt_settled": dt_settled[i],
                        "trail": [list(m) for m in trails[i]],
                    }
                    for i in ids
                ]
            )
        )
    print("  where the time goes, p50 / p99 ms (the connector's log):")
    for name, values in steps.items():
        values.sort()
        print(f"    {name}: {statistics.median(values):.1f} / {_pct(values, 0.99):.1f}")
    return p50, p99, per_pvp


def _settings(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings -> environment settings."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"not NAME=VALUE: {pair!r}")
        out[name] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=1500)
    parser.add_argument("--batched-burst", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="PvPs/s offered in the latency run (default: half the unbatched rate measured)",
    )
    parser.add_argument("--batch-max", type=int, default=100)
    parser.add_argument(
        "--trades-per-request",
        type=int,
        default=50,
        help="capacity runs submit trades through POST /v1/trades/bulk in chunks of this size "
        "(1: one POST /v1/trades each); the latency run always posts one trade at a time",
    )
    parser.add_argument(
        "--senders", type=int, help="the connector's senders_per_network (default: its own)"
    )
    parser.add_argument(
        "--connector-db", help="the connector's database URL (default: a SQLite file)"
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the gateway process (repeatable), e.g. "
        "DT_GATEWAY_PVP__RECEPTION_THREADS=2",
    )
    parser.add_argument(
        "--connector-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the connector process (repeatable)",
    )
    parser.add_argument(
        "--dump",
        type=Path,
        help="write each latency-run PvP's trade time, DT settlement time and message trail to "
        "this JSON file",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the databases and logs (deleted on success)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the operating system place both processes (default: the gateway on the "
        "first CPU this process may use, the connector on the second, when there are two)",
    )
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="both processes on SQLite files, or each on a fresh PostgreSQL database",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="with --db postgresql: after the runs with one gateway, an unbatched burst with "
        "this many gateway replicas on the one database, behind a TCP balancer that is the "
        "connector's endpoint for the gateway from the start",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN,
        help="with --db postgresql: a database URL of the server, allowed to create databases",
    )
    args = parser.parse_args()
    if args.replicas > 1 and args.db != "postgresql":
        parser.error("--replicas needs --db postgresql (one server per SQLite file)")

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"machine reference: {machine_reference():.0f} µs of CPU per pacs.009 signature")
    tmp = Path(tempfile.mkdtemp(prefix="dtgw-bench-pvp-"))
    pg = PgMeter(args.pg_admin_url, tmp / "pg-counts") if args.db == "postgresql" else None
    urls: dict[str, str] = {}
    counting: dict[str, str] = {}
    if pg is not None:
        urls = pg.create()
        pg.counts.mkdir()
        counting = pgcount.process_env(pg.counts)
    # The connector with its product defaults, not the tests' quick redelivery (a decision
    # re-sent after 1 s of backlog makes more backlog).
    defaults = ConnectorSettings()
    # Each process on its own core (`cpus`, docs/performance.md), as if each had its own
    # machine, which the gateway and a real connector have; the benchmark's client floats.
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    print(
        f"CPUs: gateway on {cpus[0]}, connector on {cpus[1]}"
        if pin
        else "CPUs: both processes placed by the operating system"
    )
    world = PvPProcesses(
        tmp,
        gateway_db_url=urls.get("gateway"),
        log_level="WARNING",
        gateway_settings={
            **counting,
            **({"DT_GATEWAY_CPUS": str(cpus[0])} if pin else {}),
            **_settings(args.gateway_env),  # last: what is asked for wins
        },
        connector_settings={
            **counting,
            **({"DT_GATEWAY_CONNECTOR__CPUS": str(cpus[1])} if pin else {}),
            "DT_GATEWAY_CONNECTOR__REDELIVER_AFTER_MS": str(defaults.redeliver_after_ms),
            "DT_GATEWAY_CONNECTOR__RETRY_BASE_MS": str(defaults.retry_base_ms),
            "DT_GATEWAY_CONNECTOR__RETRY_CAP_MS": str(defaults.retry_cap_ms),
            "DT_GATEWAY_CONNECTOR__SWEEP_INTERVAL_MS": str(defaults.sweep_interval_ms),
            **(
                {"DT_GATEWAY_CONNECTOR__SENDERS_PER_NETWORK": str(args.senders)}
                if args.senders
                else {}
            ),
            **(
                {"DT_GATEWAY_CONNECTOR__DATABASE_URL": args.connector_db or urls["connector"]}
                if args.connector_db or urls
                else {}
            ),
            **_settings(args.connector_env),  # last: what is asked for wins
        },
    )
    total = args.burst * 3 + args.batched_burst + 100_000
    world.setup(dt=total * KZT * 2, aed=total * AED * 2)
    replicas = Replicas(world, args.replicas) if args.replicas > 1 else None
    both: float | None = None
    try:
        if replicas is not None:
            replicas.front()
        sub = Submitter(world.connector.url, world.admin_token)
        run_burst(world, sub, 100, "warm-up")
        chunk = args.trades_per_request
        unbatched = run_burst(world, sub, args.burst, "unbatched", chunk, pg)
        time.sleep(3)  # the latency run starts from a quiet system, not the burst's tail
        rate = args.latency_rate or unbatched / 2
        p50, p99, per_pvp = run_latency(world, sub, rate, args.seconds, args.dump, pg)
        world.connector.kill()
        world.connector.start(
            {
                "DT_GATEWAY_CONNECTOR__BATCH_MAX": str(args.batch_max),
                "DT_GATEWAY_CONNECTOR__BATCH_LINGER_MS": "5",
            }
        )
        batched = run_burst(
            world, sub, args.batched_burst, f"batched (batch_max {args.batch_max})", chunk, pg
        )
        if replicas is not None:
            replicas.add()
            label = f"unbatched, {args.replicas} gateway replicas"
            both = run_burst(world, sub, args.burst, label, chunk, pg, replicas)
        inv, sim = world.invariants(), world.sim_check()
        if not (inv["ok"] and sim["ok"]):
            raise SystemExit(f"conservation failed: {inv} {sim}")
        print("conservation: gateway ok, connector AED ok")
    except BaseException:
        print(f"databases and logs kept in {world.tmp}", file=sys.stderr)
        raise
    finally:
        world.close()
        if replicas is not None:
            replicas.close()
        if pg is not None and not args.keep:
            pg.drop()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.keep:
        print(f"databases and logs kept in {world.tmp}")
    else:
        shutil.rmtree(world.tmp, ignore_errors=True)
    figures = {
        "unbatched_pvp_per_s": round(unbatched, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "batched_pvp_per_s": round(batched, 1),
    }
    if both is not None:
        figures |= {"replicas": args.replicas, "replicas_unbatched_pvp_per_s": round(both, 1)}
    if pg is not None:
        # The latency run's (one PvP at a time through each path): per PvP, each process.
        figures |= {f"{k}_per_pvp": round(v, 1) for k, v in per_pvp.items()}
        figures = {f"pg_{k}": v for k, v in figures.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
