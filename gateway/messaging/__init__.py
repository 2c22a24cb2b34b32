"""How messages move: the ISO 20022 door, reception batching, the transactional outbox and its
delivery, posting to a peer and the HTTP server. Shared by the
gateway and the connector mock; under the capabilities, knows nothing of the ledger or the PvP."""
