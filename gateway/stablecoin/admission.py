"""Admission of a mint request: every check that can refuse it, made before any DT moves.

A mint the gateway accepts moves the exchange's DT into the segregated wallet at once; one the
chain then refuses is refunded, but by then DT moved out and back, three webhooks went out and
the client read ``201``. So whatever can be known before moving DT is checked here, first the
request alone, then the chain:

======================  ======  ===========================  ===================================
check                   status  code                         why
======================  ======  ===========================  ===================================
amount above the limit  422     ``MINT_LIMIT_EXCEEDED``      ``stablecoin.max_mint_amount``
the zero address        422     ``RECEIVER_ZERO_ADDRESS``    the token refuses it (ERC-20)
the contract itself     422     ``RECEIVER_IS_CONTRACT``     tokens sent there are lost
contract paused         409     ``CONTRACT_PAUSED``          ``paused()`` on-chain
address blocklisted     422     ``ACCOUNT_BLOCKED``          ``isBlocklisted(to)`` on-chain
======================  ======  ===========================  ===================================

The chain's answers are as of the latest block: a pause or a blocklisting that lands between
this check and the mint's transaction still makes the contract refuse, and that mint is
refunded (docs/stablecoin.md, "If the mint cannot succeed").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.stablecoin.model import (
    AddressBlocklisted,
    MintingPaused,
    MintLimitExceeded,
    ReceiverIsContract,
    ReceiverIsZeroAddress,
)

if TYPE_CHECKING:
    from gateway.stablecoin.runtime import Stablecoin

ZERO_ADDRESS = "0x" + "0" * 40


def check_request(amount: int, evm_address: str, *, contract: str, limit: int) -> None:
    """The checks that need no chain: the per-mint limit and the receiver's address."""
    if amount > limit:
        raise MintLimitExceeded(
            f"amount {amount} is above the per-mint limit of {limit} tiyn: split it",
            limit=limit,
        )
    if evm_address.lower() == ZERO_ADDRESS:
        raise ReceiverIsZeroAddress("the zero address cannot receive tokens")
    if evm_address.lower() == contract.lower():
        raise ReceiverIsContract(
            f"{evm_address} is the stablecoin contract: tokens sent there could never move"
        )


def admit(sc: Stablecoin, amount: int, evm_address: str) -> None:
    """Refuse a mint of ``amount`` to ``evm_address`` (checksummed) that cannot succeed."""
    check_request(amount, evm_address, contract=sc.contract, limit=sc.settings.max_mint_amount)
    paused, blocklisted = sc.chain.paused_or_blocklisted(evm_address)
    if paused:
        raise MintingPaused("the contract is paused")
    if blocklisted:
        raise AddressBlocklisted(f"{evm_address} is blocklisted", evm_address=evm_address)


__all__ = ["ZERO_ADDRESS", "admit", "check_request"]
