"""Tokens in circulation without going through the API, for the watcher's tests."""

from __future__ import annotations

from gateway.ledger import service as ledger
from gateway.ledger.model import MakeTransfer
from gateway.ledger.store import LedgerUnitOfWork
from gateway.stablecoin.chain_values import Attestation
from gateway.stablecoin.contract import MINTER_ROLE
from gateway.stablecoin.service import ensure_segregated_wallet
from tests.support.stablecoin import OTHER_WALLET, Flow


def seed_holder(flow: Flow, amount: int) -> None:
    """``amount`` tokens for the first holder and their DT in the segregated wallet, minted by
    the admin directly (a flow with several confirmations only gets them from anvil's automine
    when blocks are mined, so the API's mint would wait)."""
    dep = flow.dep
    ensure_segregated_wallet(flow.uow(), flow.sc)
    seed = MakeTransfer(
        id="seed",
        debit_wallet_id=OTHER_WALLET,
        credit_wallet_id=flow.sc.segregated_wallet_id,
        amount=amount,
    )
    ledger.apply_one(LedgerUnitOfWork(flow.engine), seed)
    dep.client.transact(dep.admin, "grantRole", MINTER_ROLE, dep.admin.address)
    now = int(dep.chain.w3.eth.get_block("latest")["timestamp"])
    ref = Attestation.wallet_ref_hash_of(flow.sc.segregated_wallet_id)
    dep.client.post_attestation(dep.admin, Attestation(amount, 1, now, ref), attestor=dep.attestor)
    dep.client.mint(dep.admin, dep.holders[0].address, amount, b"\x01" * 32)
