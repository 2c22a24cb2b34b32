"""The SWIFT CBDC-connector mock: a separate party that orchestrates PvPs between the DT
Gateway and foreign central banks (simulated in process, or real partners over HTTP).

It imports only ``gateway.iso20022``, ``gateway.errors``, ``gateway.config``,
``gateway.serving`` and ``gateway.faults``; it has its own database, app and outbox.
See ``docs/pvp-protocol.md`` ("Connector mock").
"""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.connector.app import create_app
from gateway.connector.faults import FaultRule, Faults
from gateway.connector.service import Connector


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Run the connector until interrupted (``dt-gateway connector``)."""
    from gateway.serving import run_server

    connector = Connector(settings)
    app = create_app(connector)
    print(connector.cert_pem, flush=True)  # the certificate the gateway pins
    run_server(
        app,
        host or settings.connector.host,
        port or settings.connector.port,
        settings.log_level.lower(),
    )
    return 0


def main(argv: Any = None) -> int:
    from gateway.config import load_settings

    return serve(load_settings())


__all__ = ["Connector", "FaultRule", "Faults", "create_app", "main", "serve"]
