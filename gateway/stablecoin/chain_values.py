"""What the chain client hands back and takes in: receipts, events, the contract's state, and the
reserve attestation with its EIP-712 signature.

Frozen values, built from web3's answers by the client; amounts are integers of tiyn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from gateway.stablecoin.contract import EIP712_VERSION, EMPTY_LOG_ROOT

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    contract_address: ChecksumAddress | None = None


@dataclass(frozen=True)
class SubmittedTx:
    """A sent transaction whose receipt has not been awaited yet."""

    tx_hash: str
    function: str
    tx: dict[str, Any]


@dataclass(frozen=True)
class Attestation:
    """The values an attestor signs (EIP-712 ``ReserveAttestation``); amounts in tiyn.

    ``log_size`` and ``log_root`` anchor the collateral log: the tree size and root hash of a
    signed checkpoint at which the log's ``dt`` entries show ``reserve``. The default is the
    empty tree, which a contract that anchored a larger tree refuses.
    """

    reserve: int
    sequence: int
    timestamp: int
    wallet_ref_hash: bytes
    log_size: int = 0
    log_root: bytes = EMPTY_LOG_ROOT

    @staticmethod
    def wallet_ref_hash_of(dt_wallet_ref: str) -> bytes:
        """keccak256 of the segregated DT wallet's reference, as the attestation carries it."""
        return keccak(text=dt_wallet_ref)


@dataclass(frozen=True)
class RedeemedEvent:
    """One ``Redeemed(from, amount, dtWalletRef)`` log; (tx_hash, log_index) identifies it."""

    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    redeemer: ChecksumAddress
    amount: int
    dt_wallet_ref: str

    @classmethod
    def of(cls, log: Any) -> RedeemedEvent:
        return cls(
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            log_index=int(log["logIndex"]),
            block_number=int(log["blockNumber"]),
            block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
            redeemer=to_checksum_address(log["args"]["from"]),
            amount=int(log["args"]["amount"]),
            dt_wallet_ref=str(log["args"]["dtWalletRef"]),
        )


@dataclass(frozen=True)
class MintedEvent:
    """One ``Minted(to, amount, requestId)`` log."""

    tx_hash: str
    block_number: int
    block_hash: str
    to: ChecksumAddress
    amount: int
    log_index: int = 0
    request_id: bytes = b""

    @classmethod
    def of(cls, log: Any) -> MintedEvent:
        return cls(
            tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
            block_number=int(log["blockNumber"]),
            block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
            to=to_checksum_address(log["args"]["to"]),
            amount=int(log["args"]["amount"]),
            log_index=int(log["logIndex"]),
            request_id=bytes(log["args"]["requestId"]),
        )


@dataclass(frozen=True)
class LatestAttestation:
    reserve: int
    timestamp: int
    sequence: int
    max_age: int


@dataclass(frozen=True)
class LogAnchor:
    """The collateral log's tree the contract anchored last (size, RFC 9162 root)."""

    size: int
    root: bytes


def attestation_typed_data(
    attestation: Attestation, *, token_name: str, chain_id: int, contract: str
) -> dict[str, Any]:
    """The full EIP-712 message (domain: the token's name, version "1", chain id, contract)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "ReserveAttestation": [
                {"name": "reserve", "type": "uint256"},
                {"name": "sequence", "type": "uint256"},
                {"name": "timestamp", "type": "uint256"},
                {"name": "walletRefHash", "type": "bytes32"},
                {"name": "logSize", "type": "uint256"},
                {"name": "logRoot", "type": "bytes32"},
            ],
        },
        "primaryType": "ReserveAttestation",
        "domain": {
            "name": token_name,
            "version": EIP712_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": {
            "reserve": attestation.reserve,
            "sequence": attestation.sequence,
            "timestamp": attestation.timestamp,
            "walletRefHash": attestation.wallet_ref_hash,
            "logSize": attestation.log_size,
            "logRoot": attestation.log_root,
        },
    }


def sign_attestation(
    attestor: LocalAccount,
    attestation: Attestation,
    *,
    token_name: str,
    chain_id: int,
    contract: str,
) -> bytes:
    """A 65-byte (r, s, v) EIP-712 signature by ``attestor`` over ``attestation``."""
    # Imported here: eth_account is ~0.9 s of a process's start, and only an attestor signs.
    from eth_account.messages import encode_typed_data

    message = encode_typed_data(
        full_message=attestation_typed_data(
            attestation, token_name=token_name, chain_id=chain_id, contract=contract
        )
    )
    return bytes(attestor.sign_message(message).signature)


__all__ = [
    "Attestation",
    "LatestAttestation",
    "LogAnchor",
    "MintedEvent",
    "RedeemedEvent",
    "SubmittedTx",
    "TxResult",
    "attestation_typed_data",
    "sign_attestation",
]
