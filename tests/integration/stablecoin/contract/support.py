"""Shared helpers for the contract tests (a module, not a conftest, so tests can import it)."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.chain_values import Attestation
from gateway.stablecoin.contract import EMPTY_LOG_ROOT
from gateway.stablecoin.devchain import DevChain

MAX_AGE = 3600
WALLET_REF = "KZ-DT-SEG-0001"
INITIAL_RESERVE = 1_000_000_00  # 1,000,000.00 KZT in tiyn


@dataclass
class Token:
    """A fresh deployment: the client, the chain, and who holds which role."""

    client: StablecoinChain
    chain: DevChain
    admin: LocalAccount
    minter: LocalAccount
    pauser: LocalAccount
    blocklister: LocalAccount
    attestor: LocalAccount
    alice: LocalAccount
    bob: LocalAccount
    carol: LocalAccount
    sequence: int = 1

    def now(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def attestation(
        self,
        reserve: int,
        *,
        sequence: int | None = None,
        at: int | None = None,
        log: tuple[int, bytes] | None = None,
    ) -> Attestation:
        """An attestation of ``reserve``; ``log`` is its (size, root) anchor (default: the
        empty tree, which the contract holds until an attestation anchors a larger one)."""
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        size, root = log if log is not None else (0, EMPTY_LOG_ROOT)
        return Attestation(
            reserve=reserve,
            sequence=sequence,
            timestamp=self.now() if at is None else at,
            wallet_ref_hash=Attestation.wallet_ref_hash_of(WALLET_REF),
            log_size=size,
            log_root=root,
        )

    def attest(self, reserve: int) -> None:
        """Post a fresh attestation of ``reserve`` (sent by bob: anyone may post)."""
        self.client.post_attestation(self.bob, self.attestation(reserve), attestor=self.attestor)


def deploy_token(chain: DevChain, *, reserve: int | None = INITIAL_RESERVE) -> Token:
    a = chain.accounts
    client = StablecoinChain(chain.w3, poll_latency=0.005)
    client.deploy(
        a[0],
        max_attestation_age=MAX_AGE,
        minter=a[1].address,
        pauser=a[2].address,
        blocklister=a[3].address,
        attestor=a[4].address,
    )
    token = Token(client, chain, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], sequence=0)
    if reserve is not None:
        token.attest(reserve)
    return token
