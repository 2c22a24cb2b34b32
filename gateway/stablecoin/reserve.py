"""Reserve attestations: the contract's reserve guard learns the segregated DT from here.

An attestation anchors the collateral log: it is made from a signed checkpoint that holds every
DT movement committed before it, and the reserve it states is the balance that checkpoint's
entries show. The attestation and the mints after it come from one sender (the operator), so the
chain includes them in nonce order: an attestation sent before a mint covers it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.collateral.anchoring import AnchorPoint, anchor_point
from gateway.collateral.tlog import EMPTY_ROOT
from gateway.errors import GatewayError
from gateway.stablecoin.chain_errors import ContractReverted, ReserveGuardRefused
from gateway.stablecoin.chain_values import Attestation
from gateway.stablecoin.model import CollateralShortfall
from gateway.stablecoin.store import StablecoinUnitOfWork

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

log = logging.getLogger(__name__)

ATTESTATION_GAS_LIMIT = 100_000
"""Gas limit of an attestation sent without an estimate (measured: ~51,000; the contract's
first, ~68,200)."""


def _anchor(uow: Callable[..., StablecoinUnitOfWork], sc: Stablecoin) -> AnchorPoint:
    """The log's tree to attest, holding every DT movement committed so far, and the reserve
    its entries show; with no log kept, the empty tree and the wallet's balance."""
    if sc.collateral is None:
        read = uow(readonly=True)
        with read:
            wallet = read.ledger.wallet(sc.segregated_wallet_id)
        return AnchorPoint(0, EMPTY_ROOT, wallet.posted if wallet else 0)
    return anchor_point(uow().engine, sc.collateral)  # the log is in the stablecoin's database


def ensure_reserve(
    uow: Callable[..., StablecoinUnitOfWork],
    sc: Stablecoin,
    amount: int,
    *,
    refusal: ReserveGuardRefused | None = None,
    seen_generation: int | None = None,
    ticket: int | None = None,
) -> None:
    """Post an attestation of the segregated wallet's DT balance (the reserve guard refused a
    mint of ``amount``: the reserve is short or stale; or a mint's ``ticket`` is not covered).

    The log is integrated on demand, so the mint does not wait for the next period. One poster
    per process at a time; a caller that saw the guard refuse before another thread's
    attestation (``seen_generation`` moved on) just retries its mint. Raises
    :class:`CollateralShortfall` when even the whole balance cannot cover the mint (a gap:
    reconciliation will halt minting).
    """
    if sc.attestor is None:
        if refusal is not None:
            raise refusal
        return
    with sc.attest_lock:
        if seen_generation is not None and seen_generation != sc.attest_generation:
            return
        if ticket is not None and ticket <= sc.covered_ticket:
            return
        if refusal is not None:
            sc.attest_sequence = None  # the chain disagrees with us: re-read its state
        covering = sc.last_ticket  # read before the log is anchored: these mints' DT is in it
        point = _anchor(uow, sc)
        supply_after = refusal.error_args.get("supplyAfter") if refusal else None
        if supply_after is not None and point.reserve < int(supply_after):
            raise CollateralShortfall(
                f"segregated DT {point.reserve} cannot back a supply of {supply_after}",
                segregated_balance=point.reserve,
            )
        for _ in range(3):
            if sc.attest_sequence is None:
                sc.attest_sequence = sc.chain.latest_attestation().sequence
            attestation = Attestation(
                reserve=point.reserve,
                sequence=sc.attest_sequence + 1,
                timestamp=sc.chain_time(),
                wallet_ref_hash=Attestation.wallet_ref_hash_of(sc.segregated_wallet_id),
                log_size=point.size,
                log_root=point.root,
            )
            try:
                # Not awaited: the attestation and the mints after it come from one sender,
                # so the chain includes them in nonce order.
                sc.chain.submit_attestation(
                    sc.operator,
                    attestation,
                    attestor=sc.attestor,
                    gas=ATTESTATION_GAS_LIMIT if refusal is None else None,
                )
            except ContractReverted as exc:
                sc.attest_sequence = None  # another poster got there first: re-read it
                if exc.error_name == "LogAnchorBehind":  # it anchored a newer tree
                    point = _anchor(uow, sc)
                elif exc.error_name != "AttestationReplayed":
                    raise
                continue
            sc.attest_sequence = attestation.sequence
            sc.attest_generation += 1
            sc.covered_ticket = max(sc.covered_ticket, covering)
            log.info(
                "attested reserve %d (sequence %d) at log size %d",
                point.reserve,
                attestation.sequence,
                point.size,
            )
            return


def attest_after_payouts(uow: Callable[..., StablecoinUnitOfWork], sc: Stablecoin) -> None:
    """Attest the reserve again once redemptions were paid, so that the reserve on chain falls
    with the DT and the log's anchor moves past the payouts. Only logged if it fails: the next
    mint attests anyway."""
    try:
        ensure_reserve(uow, sc, 0)
    except GatewayError as exc:
        log.warning("no attestation after redemption payouts: %s: %s", exc.code, exc.detail)


__all__ = ["ATTESTATION_GAS_LIMIT", "attest_after_payouts", "ensure_reserve"]
