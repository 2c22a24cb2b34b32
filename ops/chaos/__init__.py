"""Whole-system chaos runs: the gateway's replicas on PostgreSQL, the connector mock, anvil with
the stablecoin, a bounded mixed load, faults and ``kill -9`` at seeded random moments, and an
invariant report at the end (``python -m ops.chaos.run --help``; docs/operations.md, "Chaos
runs")."""
