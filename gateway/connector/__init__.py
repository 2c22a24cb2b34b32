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
    import sys

    import uvicorn

    # Many threads share the GIL; a thread holding the database's writer lock must get it
    # back quickly, or every other writer queues behind it (5 ms default slices).
    sys.setswitchinterval(0.0005)
    connector = Connector(settings)
    app = create_app(connector)
    print(connector.cert_pem, flush=True)  # the certificate the gateway pins
    uvicorn.run(
        app,
        host=host or settings.connector.host,
        port=port or settings.connector.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


def main(argv: Any = None) -> int:
    from gateway.config import load_settings

    return serve(load_settings())


__all__ = ["Connector", "FaultRule", "Faults", "create_app", "main", "serve"]
