"""The reserve-guarded KZT stablecoin: contract artifacts, chain client, local dev chain.

- :mod:`gateway.stablecoin.contract` loads the committed artifacts (``solidity/build``) and
  decodes the contract's custom errors; no compiler at run time.
- :mod:`gateway.stablecoin.chain` is the chain client (``StablecoinChain``): deploy, mint,
  post an EIP-712 reserve attestation, redeem, reads, ``Redeemed`` logs. Its typed errors are
  :mod:`~gateway.stablecoin.chain_errors`', the values it returns
  :mod:`~gateway.stablecoin.chain_values`', and :mod:`~gateway.stablecoin.transactions` sends
  its transactions (nonces, fees, receipts, confirmations).
- :mod:`gateway.stablecoin.model` is the pure domain (mints, redemptions, reconciliations);
  :mod:`~gateway.stablecoin.service` (mints, refunds, reconciliation) and
  :mod:`~gateway.stablecoin.reserve` (attestations) are the use cases,
  :mod:`~gateway.stablecoin.watcher` the pass over ``Redeemed`` logs, and
  :mod:`~gateway.stablecoin.events` the webhook events they record.
- :mod:`gateway.stablecoin.devchain` starts anvil (or the in-process eth-tester chain).
- :mod:`gateway.stablecoin.compile` regenerates the artifacts (development only).

Nothing is imported here, so that importing a pure module of this package (a domain model)
does not pull in web3.
"""
