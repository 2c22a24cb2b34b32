"""What the stablecoin services need at run time, built once from the settings: the chain
client, the operator (minter) and attestor keys, the segregated wallet's id, the crash points.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from web3 import Web3

from gateway.collateral.runtime import CollateralLog
from gateway.config import FaultSettings, Settings, StablecoinSettings
from gateway.stablecoin.chain import StablecoinChain, account_from_key
from gateway.stablecoin.model import StablecoinNotConfigured


def default_segregated_wallet_id(contract_address: str) -> str:
    """One segregated collateral wallet per contract."""
    return f"segregated-{contract_address.removeprefix('0x').lower()}"


@dataclass
class Stablecoin:
    settings: StablecoinSettings
    faults: FaultSettings
    chain: StablecoinChain
    operator: LocalAccount
    attestor: LocalAccount | None
    segregated_wallet_id: str
    currency: str = "KZT"
    attest_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    attest_generation: int = 0
    """Attestations this process posted: a mint refused before the latest one just retries."""
    attest_sequence: int | None = None
    """The latest attestation sequence known on-chain (None: read it)."""
    last_ticket: int = 0
    """Mints accepted by this process, numbered after their DT committed."""
    covered_ticket: int = 0
    """Every mint with a ticket up to this one had its DT in a posted attestation's reserve."""
    ticket_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _clock: tuple[float, int] | None = field(default=None, repr=False)

    def chain_time(self) -> int:
        """The chain's clock, from its latest block's timestamp read at most every 10 s and
        advanced with the local clock since (an attestation's timestamp must not be ahead of
        the chain's, nor older than the maximum age)."""
        now = time.monotonic()
        if self._clock is None or now - self._clock[0] > 10:
            self._clock = (now, self.chain.block_timestamp())
        read_at, chain_ts = self._clock
        return chain_ts + int(now - read_at)

    def take_ticket(self) -> int:
        with self.ticket_lock:
            self.last_ticket += 1
            return self.last_ticket

    collateral: CollateralLog | None = None
    """The proof-of-collateral log the chain watcher feeds (None: none is kept)."""

    wallet_ready: bool = False
    """Set once the segregated wallet is known to exist (saves a lookup per mint)."""

    @property
    def contract(self) -> str:
        return str(self.chain.address)

    @classmethod
    def from_settings(cls, settings: Settings, w3: Web3 | None = None) -> Stablecoin:
        """Needs ``contract_address`` and ``operator_key``; ``w3`` for the in-process chain.
        Without ``chain_id`` the node is asked for it (ChainUnavailable while it is down)."""
        sc = settings.stablecoin
        if not sc.contract_address or sc.operator_key is None:
            raise StablecoinNotConfigured(
                "set stablecoin.contract_address and stablecoin.operator_key "
                "(`dt-gateway stablecoin deploy` prints them)"
            )
        chain = StablecoinChain.from_settings(
            sc,
            w3,
            poll_latency=sc.receipt_poll_seconds,
            receipt_timeout=sc.receipt_timeout_seconds,
            gas_margin=sc.gas_margin,
            fee_cache_seconds=sc.fee_cache_seconds,
        )
        attestor = account_from_key(sc.attestor_key.get_secret_value()) if sc.attestor_key else None
        wallet_id = sc.segregated_wallet_id or default_segregated_wallet_id(sc.contract_address)
        # With the chain id configured, nothing here asks the node, so a replica starts while
        # the node is down (its chain routes answer 503 until it is back); the client checks
        # the node serves that chain before the first transaction.
        chain_id = sc.chain_id if sc.chain_id is not None else chain.chain_id
        collateral = CollateralLog.from_settings(
            settings, chain_id=chain_id, contract=str(chain.address), wallet_id=wallet_id
        )
        return cls(
            settings=sc,
            faults=settings.faults,
            chain=chain,
            operator=account_from_key(sc.operator_key.get_secret_value()),
            attestor=attestor,
            segregated_wallet_id=wallet_id,
            currency=settings.ledger.currency,
            collateral=collateral,
        )


__all__ = ["Stablecoin", "default_segregated_wallet_id"]
