"""The README's first command runs the product's main job: ``dt-gateway demo``, with its
embedded defaults and no configuration, end to end (the ledger, the stablecoin on a real EVM
node, PvP through the connector mock, the collateral log verified and a tampered copy of it
refused), in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "dt-gateway"


def test_the_demo_runs_every_step_with_no_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    done = subprocess.run(
        [str(BIN), "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "tampered copy refused" in done.stdout
    assert done.stdout.rstrip().endswith("demo complete: every step behaved as promised")
    assert (tmp_path / "var" / "demo" / "gateway.db").is_file()
