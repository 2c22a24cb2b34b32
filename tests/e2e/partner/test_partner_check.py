"""``dt-gateway partner-check`` against a reference partner written without the gateway's
message code (lxml + signxml), over real HTTP on 127.0.0.1: every step passes (reported as JSON
lines); and against the same partner broken on purpose, where the check names each failing
test case and exits 1."""

from __future__ import annotations

import errno
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from gateway.cli import main
from gateway.messaging.serving import free_port
from tests.e2e.partner.refpartner import ReferencePartner


@contextmanager
def _partner(broken: frozenset[str] = frozenset()) -> Iterator[tuple[ReferencePartner, str]]:
    partner = ReferencePartner(
        bic="CBAUAEAA",
        connector_url="(set by _check: the port partner-check listens on)",
        accounts={"EBIL-AED": 1_000_000},
        broken=broken,
    )
    server = partner.serve()
    try:
        yield partner, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        partner.close()


def _check(tmp_path: Path, partner: ReferencePartner, endpoint: str, *more: str) -> tuple[int, str]:
    """``partner-check`` on a free port, which the partner must know before the check starts
    (it answers there). Another test may take that port between its choice and the check's
    bind, which fails before anything is sent: then again, on another port."""
    cert = tmp_path / "partner.pem"
    cert.write_text(partner.cert_pem)
    for attempt in range(5):
        port = free_port()
        partner.connector_url = f"http://127.0.0.1:{port}"
        args = ["partner-check", "--endpoint", endpoint, "--bic", "CBAUAEAA", "--currency"]
        args += ["AED", "--cert", str(cert), "--listen", f"127.0.0.1:{port}"]
        args += ["--late-seconds", "2", *more]
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                code = main(args)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
            continue
        return code, out.getvalue()
    raise AssertionError("unreachable")


def test_the_reference_partner_passes_every_step(tmp_path: Path) -> None:
    with _partner() as (partner, endpoint):
        code, report = _check(tmp_path, partner, endpoint, "--json")
        balance = partner.accounts["EBIL-AED"]
    assert code == 0, report
    # --json: one object per step, then the totals; nothing else on stdout.
    *steps, summary = [json.loads(line) for line in report.splitlines()]
    assert {(s["type"], s["result"], s["detail"]) for s in steps} == {("step", "PASS", "")}
    assert [s["case_number"] for s in steps] == sorted(s["case_number"] for s in steps)
    cases = {s["case_number"]: s["case"] for s in steps}
    assert sorted(cases) == list(range(1, 12))
    assert cases[6] == "past deadline: a pacs.009 whose TillTm has passed"
    assert "pacs.002 RJCT TM01: refused, nothing locked" in {s["step"] for s in steps}
    assert "pacs.002 RJCT CH16: nothing settled" in {s["step"] for s in steps}
    assert summary == {
        "type": "summary",
        "result": "PASS",
        "cases": 11,
        "cases_passed": 11,
        "cases_failed": 0,
        "steps": len(steps),
        "steps_passed": len(steps),
        "steps_failed": 0,
        "failed_cases": [],
    }
    # Settled legs moved money; released, rejected and refused ones did not.
    settled = sum(1 for leg in partner.legs.values() if leg.state == "settled")
    assert settled >= 4 and balance == 1_000_000 - 100 * settled


def test_a_broken_partner_fails_and_each_failing_step_is_named(tmp_path: Path) -> None:
    broken = frozenset(
        {"accept_unsigned", "release_at_deadline", "cancel_settled", "lock_late", "any_fulfilment"}
    )
    with _partner(broken) as (partner, endpoint):
        code, report = _check(tmp_path, partner, endpoint)
    assert code == 1, report
    failed = {
        line.removeprefix("FAILED: ") for line in report.splitlines() if line.startswith("FAILED: ")
    }
    assert failed == {
        "past deadline: a pacs.009 whose TillTm has passed",
        "wrong fulfilment: a COMMIT whose Flfmt does not match",
        "late fulfilment: COMMIT after the deadline",
        "camt.056 after settlement",
        "bad signature",
    }, report
    assert "FAIL  signed by another key: admi.002 DS0B" in report
    assert "expected camt.029 RJCR\n" in report and "got camt.029 ACCR (MsgId" in report
    assert "expected pacs.002 ACSC\n" in report and "got pacs.002 RJCT DS02 (MsgId" in report
    assert "expected pacs.002 RJCT TM01\n" in report and "got pacs.002 ACSP (MsgId" in report
    assert "expected pacs.002 RJCT CH16\n" in report and "got pacs.002 ACSC (MsgId" in report
    assert "RESULT: FAIL" in report
