"""Schemathesis against a server on 127.0.0.1: bounded, seeded, every response checked against
the server's own OpenAPI document.

Run as a separate process (its CLI), so that the server under test keeps the test process's
threads to itself; a failing run prints schemathesis's report, with a ``curl`` line for each
failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SEED = 20260
MAX_EXAMPLES = 20
"""Per operation and phase: a few minutes at most for every role on both databases."""
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)


def run_schemathesis(
    base_url: str, token: str | None, *filters: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """``st run`` against ``base_url``'s ``/schema/openapi.json``, with ``token`` as bearer key.

    Examples from the document, the coverage phase (boundaries and invalid values of every
    parameter and body field) and random fuzzing; not the stateful phase, whose sequences
    depend on what earlier runs created."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/schema/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        # The ISO 20022 doors take raw XML, documented as a string: schemathesis serialises
        # few of the strings it draws as XML, and would otherwise stop at that door.
        "--suppress-health-check",
        "filter_too_much",
        "--no-color",
        *(["--header", f"Authorization: Bearer {token}"] if token else []),
        *filters,
    ]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )


def report(run: subprocess.CompletedProcess[str]) -> str:
    return f"schemathesis failed ({run.returncode}):\n{run.stdout[-20_000:]}\n{run.stderr[-5_000:]}"


__all__ = ["CHECKS", "MAX_EXAMPLES", "SEED", "report", "run_schemathesis"]
