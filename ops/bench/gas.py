"""Gas used by the stablecoin's hot paths, measured on anvil (or the in-process chain).

Run: .venv/bin/python ops/bench/gas.py [--chain anvil|eth-tester]
Prints one line per figure and ends with one JSON line. Gas is deterministic, so one run is
the figure. "New holder" means the recipient's balance slot goes from zero to non-zero; every
mint uses a random request id (a fresh bitmap word: the worst case), except the ``same_word``
figure, whose id shares its 256-id word with an earlier mint. The supply is already non-zero
(the contract's very first mint also pays to create the totalSupply slot). Attestations
anchor the collateral log: ``gas_post_attestation`` moves the anchor to a larger tree (the
steady state), ``gas_post_attestation_first`` is the contract's first one (its log size slot
goes from zero to non-zero), ``gas_post_attestation_same_anchor`` repeats the stored (size,
root) with a new reserve (nothing to rewrite).

Reusable: ``measure_gas(chain)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.chain_values import Attestation
from gateway.stablecoin.devchain import ChainKind, DevChain, start_devchain


def measure_gas(chain: DevChain) -> dict[str, int]:
    admin, minter, attestor, alice, bob, carol, dave = chain.accounts[:7]
    client = StablecoinChain(chain.w3, poll_latency=0.002)
    client.deploy(admin, minter=minter.address, attestor=attestor.address)
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    ref_hash = Attestation.wallet_ref_hash_of("KZ-DT-SEG-0001")

    def attest(sequence: int, log_size: int) -> int:
        root = hashlib.sha256(b"root of %d" % log_size).digest()
        attestation = Attestation(10**12, sequence, now, ref_hash, log_size, root)
        return client.post_attestation(admin, attestation, attestor=attestor).gas_used

    attest_first = attest(1, 1_000)
    attest_again = attest(2, 1_250)
    attest_same_anchor = attest(3, 1_250)
    first_mint = client.mint(minter, alice.address, 100_00, os.urandom(32))
    word = int.from_bytes(os.urandom(32), "big") & ~0xFF
    new_holder = client.mint(minter, bob.address, 100_00, os.urandom(32))
    existing_holder = client.mint(minter, bob.address, 100_00, os.urandom(32))
    client.mint(minter, alice.address, 1, word.to_bytes(32, "big"))
    same_word = client.mint(minter, carol.address, 100_00, (word | 1).to_bytes(32, "big"))
    transfer = client.transfer(alice, bob.address, 10_00)
    transfer_new = client.transfer(alice, dave.address, 10_00)
    redeem = client.redeem(bob, 50_00, "KZ-DT-EXCH-0001")
    return {
        "gas_mint_new_holder": new_holder.gas_used,
        "gas_mint_existing_holder": existing_holder.gas_used,
        "gas_mint_new_holder_same_word": same_word.gas_used,
        "gas_mint_first_ever": first_mint.gas_used,
        "gas_transfer": transfer.gas_used,
        "gas_transfer_new_holder": transfer_new.gas_used,
        "gas_redeem": redeem.gas_used,
        "gas_post_attestation": attest_again,
        "gas_post_attestation_first": attest_first,
        "gas_post_attestation_same_anchor": attest_same_anchor,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", choices=["anvil", "eth-tester"], default="anvil")
    args = parser.parse_args()
    kind: ChainKind = args.chain
    with start_devchain(kind) as chain:
        figures = measure_gas(chain)
    print(f"chain: {chain.kind}")
    for name, gas in figures.items():
        print(f"{name:32} {gas:>8,}")
    print(json.dumps({"chain": chain.kind, **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
