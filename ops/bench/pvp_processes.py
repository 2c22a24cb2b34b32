"""The two processes of the PvP benchmark (``ops/bench/pvp.py``) as it starts them:
``dt-gateway serve`` and ``dt-gateway connector`` (with its simulated AED bank), wired by the
e2e harness (:class:`PvPProcesses`), with the settings a measurement needs.

- the connector keeps its product defaults for redelivery, retries and sweeps, not the
  tests' quick ones (a decision re-sent after 1 s of backlog makes more backlog);
- each process on a core of its own when there are two (``cpus``, ``connector.cpus``), as
  each would be on its own machine; the benchmark's client floats;
- on PostgreSQL, each process on its party's database and counting its statements
  (``ops/bench/pgcount.py``);
- last, the ``NAME=VALUE`` settings asked for on the command line, which win.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.config import ConnectorSettings
from tests.e2e.pvp.harness import PvPProcesses


def name_values(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings -> environment settings."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"not NAME=VALUE: {pair!r}")
        out[name] = value
    return out


def pinned_cpus(no_pin: bool) -> list[int]:
    """The gateway's CPU and the connector's: the first two this process may use, or none
    (the operating system places both) when asked or when there are fewer than two."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cpus[:2] if not no_pin and len(cpus) >= 2 else []


def start(
    tmp: Path,
    *,
    cpus: list[int],
    urls: dict[str, str],
    counting: dict[str, str],
    senders: int | None,
    connector_db: str | None,
    gateway_env: list[str],
    connector_env: list[str],
) -> PvPProcesses:
    """Both processes under ``tmp``: on SQLite files there, or (``urls`` by party) on
    PostgreSQL; ``cpus`` from :func:`pinned_cpus`; ``counting`` the driver counters' settings;
    ``senders`` the connector's senders per network, ``connector_db`` its database URL (each
    None for its default); ``gateway_env``/``connector_env`` ``NAME=VALUE`` settings."""
    defaults = ConnectorSettings()
    pin = len(cpus) == 2
    print(
        f"CPUs: gateway on {cpus[0]}, connector on {cpus[1]}"
        if pin
        else "CPUs: both processes placed by the operating system"
    )
    return PvPProcesses(
        tmp,
        gateway_db_url=urls.get("gateway"),
        log_level="WARNING",
        gateway_settings={
            **counting,
            **({"DT_GATEWAY_CPUS": str(cpus[0])} if pin else {}),
            **name_values(gateway_env),  # last: what is asked for wins
        },
        connector_settings={
            **counting,
            **({"DT_GATEWAY_CONNECTOR__CPUS": str(cpus[1])} if pin else {}),
            "DT_GATEWAY_CONNECTOR__REDELIVER_AFTER_MS": str(defaults.redeliver_after_ms),
            "DT_GATEWAY_CONNECTOR__RETRY_BASE_MS": str(defaults.retry_base_ms),
            "DT_GATEWAY_CONNECTOR__RETRY_CAP_MS": str(defaults.retry_cap_ms),
            "DT_GATEWAY_CONNECTOR__SWEEP_INTERVAL_MS": str(defaults.sweep_interval_ms),
            **({"DT_GATEWAY_CONNECTOR__SENDERS_PER_NETWORK": str(senders)} if senders else {}),
            **(
                {"DT_GATEWAY_CONNECTOR__DATABASE_URL": connector_db or urls["connector"]}
                if connector_db or urls
                else {}
            ),
            **name_values(connector_env),  # last: what is asked for wins
        },
    )
