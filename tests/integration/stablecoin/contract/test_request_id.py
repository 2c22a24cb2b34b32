"""The on-chain request id of a mint, pinned by known answers.

The id is what makes a mint happen at most once on-chain across resubmissions, restarts and
replicas: every process must derive the same 32 bytes from a mint id, release after release.
The expected values below were computed outside the gateway (``printf 'dt-gateway:mint:%s' ID |
sha256sum``), and the contract's record of them is checked in its storage, bit by bit.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from gateway.stablecoin.contract import load_artifact
from gateway.stablecoin.model import request_id_of
from tests.integration.stablecoin.contract.support import Token

KNOWN_ANSWERS = {
    "0123456789abcdef0123456789abcdef": (
        "e24588ba90c310bf620c9a5ea00d066ab5ec8fa87a893b2e57f8a57d3401c661"
    ),
    "5f0c8a3e2b1d4c6e9a7f0b2c4d6e8f10": (
        "8f6f5802cf27d99d3f3b7856e60c9960d5019533817fbe51d468ab71866ae4fb"
    ),
    "": "a5c19a16bf86ff34b16f01076a62111423223052994c87d0b598f793b0d71b56",
}

MINT_ID = "0123456789abcdef0123456789abcdef"
WORD = 0xE24588BA90C310BF620C9A5EA00D066AB5EC8FA87A893B2E57F8A57D3401C6
"""The request id's bitmap word in the contract: the id without its low byte."""
BIT = 0x61
"""Its bit in that word: the id's low byte."""


@pytest.mark.parametrize("mint_id", list(KNOWN_ANSWERS))
def test_request_id_is_the_sha256_of_the_prefixed_mint_id(mint_id: str) -> None:
    expected = KNOWN_ANSWERS[mint_id]
    assert request_id_of(mint_id).hex() == expected
    digest = hashes.Hash(hashes.SHA256())  # a second library, beside the hard-coded answer
    digest.update(b"dt-gateway:mint:" + mint_id.encode("ascii"))
    assert digest.finalize().hex() == expected


def _used_requests_word(token: Token, word: int) -> int:
    """The contract's ``_usedRequests[word]``, read from its storage (a Solidity mapping:
    slot keccak256(key . mapping slot))."""
    layout = {item["label"]: item["slot"] for item in load_artifact().raw["storageLayout"]}
    key = keccak(encode(["uint256", "uint256"], [word, int(layout["_usedRequests"])]))
    stored = token.chain.w3.eth.get_storage_at(token.client.address, int.from_bytes(key, "big"))
    return int.from_bytes(bytes(stored), "big")


@pytest.mark.chain
def test_the_contract_records_the_gateway_request_id_as_one_bit(token: Token) -> None:
    request_id = request_id_of(MINT_ID)
    assert int.from_bytes(request_id, "big") == (WORD << 8) | BIT
    assert not token.client.is_request_used(request_id)
    assert _used_requests_word(token, WORD) == 0

    start = token.client.block_number()
    token.client.mint(token.minter, token.alice.address, 1_00, request_id)

    assert token.client.is_request_used(request_id)
    assert _used_requests_word(token, WORD) == 1 << BIT
    [minted] = token.client.logs("Minted", start)
    assert bytes(minted["args"]["requestId"]).hex() == KNOWN_ANSWERS[MINT_ID]
    # Its neighbours in the same word (another bit) and in the next word are still free.
    for other in ((WORD << 8) | (BIT ^ 1), ((WORD + 1) << 8) | BIT):
        assert not token.client.is_request_used(other.to_bytes(32, "big"))
