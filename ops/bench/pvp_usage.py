"""What the PvP benchmark's processes (``ops/bench/pvp.py``) used while a phase ran: CPU per
party and per thread group, and the stalls of their logs' fsyncs; and the machine reference
that makes runs on a drifting VM comparable.

CPU is read from Linux's ``/proc`` (user + system time of a process or of each of its threads),
so the processes carry no code for it. A party is one process or several (gateway replicas);
the benchmark's own client is "bench".
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pgmeter import cpu_s
from replicas import Replicas

from gateway.sqlite.walsync import slow_fsync_reports
from tests.e2e.pvp.harness import PvPProcesses


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
    assert isinstance(key, ec.EllipticCurvePrivateKey)  # the product's keys are ECDSA P-256
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


def cpu_by_thread(pid: int) -> dict[str, tuple[str, float]]:
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


def busy_by_thread(
    before: dict[str, tuple[str, float]],
    after: dict[str, tuple[str, float]],
    process_cpu: float,
    seconds: float,
) -> str:
    """The groups' shares of one CPU between two :func:`cpu_by_thread`, busiest first.
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


def party_pids(world: PvPProcesses, replicas: Replicas | None = None) -> dict[str, list[int]]:
    """Each party's processes: the gateway's replicas (one, unless ``replicas`` were added)
    and the connector."""
    assert world.gateway.proc is not None and world.connector.proc is not None
    gateways = replicas.pids() if replicas is not None else [world.gateway.proc.pid]
    return {"gateway": gateways, "connector": [world.connector.proc.pid]}


def cpu_all(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per party (its processes together) and of this process ("bench")."""
    cpu = {party: sum(cpu_s(pid) for pid in members) for party, members in pids.items()}
    return cpu | {"bench": sum(os.times()[:2])}


def slow_fsyncs(log: Path, since: int) -> tuple[int, float]:
    """Slow fsyncs a process logged after byte ``since`` of its log: how many and the
    longest, in ms (``gateway.sqlite.walsync.slow_fsync_reports``)."""
    with log.open("rb") as fh:
        fh.seek(since)
        return slow_fsync_reports(fh.read().decode(errors="replace"))
