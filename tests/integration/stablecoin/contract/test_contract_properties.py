"""Random sequences of mint / transfer / redeem / attest on anvil keep the supply backed.

After every step: the holders' balances sum to totalSupply, totalSupply matches the model, and
totalSupply <= the attested reserve; the log anchor (size, root) is the model's, and only ever
moved forward (attestations behind it, or forking it at its size, are refused). Each example
starts from an anvil snapshot of one deployment and reverts to it at the end, with a fresh client
(its nonce cache must not outlive the reverted state).
"""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.chain_errors import (
    AttestationRejected,
    ContractReverted,
    MintRequestAlreadyUsed,
    ReserveGuardRefused,
)
from gateway.stablecoin.chain_values import Attestation, LogAnchor
from gateway.stablecoin.devchain import DevChain
from tests.integration.stablecoin.contract.support import WALLET_REF, deploy_token

pytestmark = [pytest.mark.chain, pytest.mark.slow]

HOLDERS = 3
amounts = st.integers(min_value=1, max_value=5_000)
holder_index = st.integers(min_value=0, max_value=HOLDERS - 1)


def test_supply_stays_backed_and_conserved(anvil_chain: DevChain) -> None:
    base = deploy_token(anvil_chain, reserve=None)
    address = base.client.address
    holders = [base.alice, base.bob, base.carol]

    class SupplyMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = anvil_chain.snapshot()
            self.client = StablecoinChain(anvil_chain.w3, address, poll_latency=0.002)
            self.balances = [0] * HOLDERS
            self.reserve = 0
            self.sequence = self.client.latest_attestation().sequence
            self.anchor = self.client.log_anchor()
            self.used_ids: list[bytes] = []

        def teardown(self) -> None:
            anvil_chain.revert(self.snapshot)

        @property
        def supply(self) -> int:
            return sum(self.balances)

        def _attestation(self, reserve: int, anchor: LogAnchor) -> Attestation:
            now = int(anvil_chain.w3.eth.get_block("latest")["timestamp"])
            ref = Attestation.wallet_ref_hash_of(WALLET_REF)
            return Attestation(reserve, self.sequence + 1, now, ref, anchor.size, anchor.root)

        def _attest(self, reserve: int, grow: int) -> None:
            anchor = self.anchor
            if grow:
                size = anchor.size + grow
                anchor = LogAnchor(size, hashlib.sha256(b"tree %d" % size).digest())
            attestation = self._attestation(reserve, anchor)
            self.client.post_attestation(base.admin, attestation, attestor=base.attestor)
            self.sequence += 1
            self.reserve = reserve
            self.anchor = anchor

        @initialize(reserve=st.integers(min_value=0, max_value=20_000))
        def first_attestation(self, reserve: int) -> None:
            self._attest(reserve, grow=1)

        @rule(extra=st.integers(min_value=0, max_value=20_000), grow=st.integers(0, 3))
        def attest(self, extra: int, grow: int) -> None:
            self._attest(self.supply + extra, grow)

        @rule(data=st.data(), extra=st.integers(min_value=0, max_value=20_000))
        def attest_behind_the_anchor(self, data: st.DataObject, extra: int) -> None:
            size = data.draw(st.integers(0, self.anchor.size - 1))
            behind = LogAnchor(size, hashlib.sha256(b"tree %d" % size).digest())
            with pytest.raises(AttestationRejected) as err:
                self.client.post_attestation(
                    base.admin,
                    self._attestation(self.supply + extra, behind),
                    attestor=base.attestor,
                )
            assert err.value.error_name == "LogAnchorBehind"

        @rule(extra=st.integers(min_value=0, max_value=20_000))
        def attest_another_root_at_the_anchored_size(self, extra: int) -> None:
            fork = LogAnchor(self.anchor.size, hashlib.sha256(b"fork").digest())
            with pytest.raises(AttestationRejected) as err:
                self.client.post_attestation(
                    base.admin, self._attestation(self.supply + extra, fork), attestor=base.attestor
                )
            assert err.value.error_name == "LogAnchorConflict"

        @rule(to=holder_index, amount=amounts)
        def mint(self, to: int, amount: int) -> None:
            request_id = os.urandom(32)
            if self.supply + amount > self.reserve:
                with pytest.raises(ReserveGuardRefused):
                    self.client.mint(base.minter, holders[to].address, amount, request_id)
                return
            self.client.mint(base.minter, holders[to].address, amount, request_id)
            self.balances[to] += amount
            self.used_ids.append(request_id)

        @precondition(lambda self: bool(self.used_ids))
        @rule(data=st.data(), to=holder_index)
        def replay_a_request_id(self, data: st.DataObject, to: int) -> None:
            request_id = data.draw(st.sampled_from(self.used_ids))
            with pytest.raises(MintRequestAlreadyUsed):
                self.client.mint(base.minter, holders[to].address, 1, request_id)

        @rule(src=holder_index, dst=holder_index, amount=amounts)
        def transfer(self, src: int, dst: int, amount: int) -> None:
            if amount > self.balances[src]:
                with pytest.raises(ContractReverted):
                    self.client.transfer(holders[src], holders[dst].address, amount)
                return
            self.client.transfer(holders[src], holders[dst].address, amount)
            self.balances[src] -= amount
            self.balances[dst] += amount

        @rule(holder=holder_index, amount=amounts)
        def redeem(self, holder: int, amount: int) -> None:
            if amount > self.balances[holder]:
                with pytest.raises(ContractReverted):
                    self.client.redeem(holders[holder], amount, WALLET_REF)
                return
            self.client.redeem(holders[holder], amount, WALLET_REF)
            self.balances[holder] -= amount

        @invariant()
        def supply_is_conserved_and_backed(self) -> None:
            on_chain = [self.client.balance_of(h.address) for h in holders]
            total = self.client.total_supply()
            assert on_chain == self.balances
            assert sum(on_chain) == total
            assert total <= self.client.reserve() == self.reserve
            assert self.client.log_anchor() == self.anchor
            assert self.client.latest_attestation().sequence == self.sequence

    run_state_machine_as_test(
        SupplyMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
