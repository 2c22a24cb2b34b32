"""The shipped Grafana dashboard reads only metrics the gateway exports, and is well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "dt-gateway.json"
EXPORTERS = ("gateway/metrics.py", "gateway/telemetry.py", "gateway/api/observe.py")
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _exported() -> set[str]:
    names: set[str] = set()
    for module in EXPORTERS:
        names |= set(re.findall(r'"(dtg_[a-z_]+)"', (ROOT / module).read_text()))
    return names


def _base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(dtg_[a-z_]+)", e)}
    exported = _exported()
    unknown = {m for m in used if m not in exported and _base(m) not in exported}
    assert unknown == set()
    assert len(used) >= 20


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]
