"""``dt-gateway connector``: run the connector mock's HTTP server."""

from __future__ import annotations

import logging

from gateway.config import Settings
from gateway.connector.app import create_app
from gateway.connector.runtime import Connector


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, cpus: str | None = None
) -> int:
    """Run the connector until interrupted (``dt-gateway connector``), on the CPUs ``cpus``
    (else ``connector.cpus``) if set."""
    from gateway.cpus import pin_process
    from gateway.messaging.serving import run_server

    chosen = cpus or settings.connector.cpus
    if chosen:
        pin_process(chosen)

    connector = Connector(settings)
    app = create_app(connector)
    print(connector.cert_pem, flush=True)  # the certificate the gateway pins
    host = host or settings.connector.host
    if settings.connector.admin_token is None and host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "the connector listens on %s with open administrative endpoints: anyone reaching "
            "it can register participants, inject faults or read any PvP (set "
            "connector.admin_token)",
            host,
        )
    run_server(app, host, port or settings.connector.port, settings.log_level.lower())
    return 0
