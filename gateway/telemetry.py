"""What the process counts as it works, for :mod:`gateway.metrics` to export.

Only what cannot be read from the database at scrape time is counted here, and only with O(1)
work where it happens: a PvP leg reaching its final state (how long it took), and the SQLite
log's fsyncs (how long each took, how many commits it covered). Backlogs, states and the
collateral log are read from the database when the metrics are scraped, so the hot paths pay
nothing for them.

Counts are of this process since it started; Prometheus sums the replicas and takes rates.
Imports nothing of the gateway, so any layer may record here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
"""The process's counters; each app's exporter collects them beside its own gauges."""

LEG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

PVP_LEGS_FINISHED = Counter(
    "dtg_pvp_legs_finished",
    "PvP legs of the DT network that reached a final state in this process, by that state",
    ["state"],
    registry=REGISTRY,
)
PVP_LEG_SECONDS = Histogram(
    "dtg_pvp_leg_seconds",
    "From a leg's pacs.009 received to its final state (settled, released, rejected, "
    "cancelled), by that state",
    ["state"],
    buckets=LEG_BUCKETS,
    registry=REGISTRY,
)
SQLITE_FSYNC_SECONDS = Histogram(
    "dtg_sqlite_fsync_seconds",
    "Duration of each fsync of the SQLite write-ahead log (group commit): every commit "
    "waiting for it waits this long",
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5, 1.0),
    registry=REGISTRY,
)
SQLITE_GROUP_SIZE = Histogram(
    "dtg_sqlite_fsync_group_size",
    "Commits (and reads waiting for durability) covered by one fsync of the SQLite log",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)


def leg_finished(state: str, seconds: float) -> None:
    PVP_LEGS_FINISHED.labels(state).inc()
    PVP_LEG_SECONDS.labels(state).observe(max(0.0, seconds))


def fsync_done(seconds: float, covered: int) -> None:
    SQLITE_FSYNC_SECONDS.observe(seconds)
    SQLITE_GROUP_SIZE.observe(covered)


__all__ = [
    "PVP_LEGS_FINISHED",
    "PVP_LEG_SECONDS",
    "REGISTRY",
    "SQLITE_FSYNC_SECONDS",
    "SQLITE_GROUP_SIZE",
    "fsync_done",
    "leg_finished",
]
