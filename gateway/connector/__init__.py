"""The SWIFT CBDC-connector mock: a separate party that orchestrates PvPs between the DT
Gateway and foreign central banks (simulated in process, or real partners over HTTP).

It imports only ``gateway.iso20022``, ``gateway.errors``, ``gateway.config``,
``gateway.messaging``, ``gateway.sqlite``, ``gateway.cpus`` and ``gateway.faults``; it has its
own database, app and outbox.
See ``docs/pvp-protocol.md`` ("Connector mock").

The package itself imports nothing, so that a command of ``dt-gateway`` other than
``connector`` does not load the connector: its state is ``runtime.Connector``, its HTTP app
``app.create_app``, its server ``serving.serve``.
"""
