"""The verifier reads AttestationPosted events by hand exactly as the contract's ABI encodes them
(checked against eth_abi, keccak and the compiled artifact), refuses what is not one, and
halves block ranges a node refuses as too large."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from gateway.collateral import anchors
from gateway.collateral.anchors import Anchor
from gateway.collateral.rpc import Rpc, RpcError, RpcRefused
from gateway.stablecoin.contract import load_artifact

CONTRACT = "0x" + "5f" * 20
TX = "0x" + "ab" * 32
ROOT = bytes(range(32))
SIGNATURE = "AttestationPosted(uint256,uint256,uint256,bytes32,uint256,bytes32,address)"


def test_the_topic_is_the_keccak_of_the_contracts_event_signature() -> None:
    assert "0x" + keccak(text=SIGNATURE).hex() == anchors.ATTESTATION_POSTED_TOPIC
    (event,) = [e for e in load_artifact().abi if e.get("name") == "AttestationPosted"]
    types = ",".join(i["type"] for i in event["inputs"])
    assert f"AttestationPosted({types})" == SIGNATURE
    indexed = [i["name"] for i in event["inputs"] if i["indexed"]]
    data = [i["name"] for i in event["inputs"] if not i["indexed"]]
    assert indexed == ["sequence", "attestor"]
    assert data == ["reserve", "timestamp", "walletRefHash", "logSize", "logRoot"]


def _log(
    *, sequence: int = 9, reserve: int = 1_500, size: int = 42, block: int = 7, **changes: Any
) -> dict[str, Any]:
    data = abi_encode(
        ["uint256", "uint256", "bytes32", "uint256", "bytes32"],
        [reserve, 1_796_565_600, b"\x5e" * 32, size, ROOT],
    )
    log = {
        "address": CONTRACT.upper().replace("0X", "0x"),
        "topics": [
            anchors.ATTESTATION_POSTED_TOPIC,
            "0x" + sequence.to_bytes(32, "big").hex(),
            "0x" + "00" * 12 + "a7" * 20,
        ],
        "data": "0x" + data.hex(),
        "blockNumber": hex(block),
        "transactionHash": TX,
        "logIndex": hex(3),
        "removed": False,
    }
    return {**log, **changes}


def _node(answer: Any) -> Rpc:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        try:
            reply = {"jsonrpc": "2.0", "id": body["id"], "result": answer(body)}
        except LookupError as exc:
            error = {"code": -32005, "message": str(exc)}
            reply = {"jsonrpc": "2.0", "id": body["id"], "error": error}
        return httpx.Response(200, json=reply)

    return Rpc("http://node.test", httpx.Client(transport=httpx.MockTransport(handle)))


def test_an_attestation_event_is_read_as_the_abi_encodes_it() -> None:
    queries: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> Any:
        queries.append(body["params"][0])
        return [_log()]

    (found,) = anchors.fetch(_node(answer), CONTRACT, 5, 9)
    assert found == Anchor(
        block=7, tx_hash=TX, log_index=3, sequence=9, reserve=1_500, size=42, root=ROOT
    )
    assert queries == [
        {
            "address": CONTRACT,
            "fromBlock": "0x5",
            "toBlock": "0x9",
            "topics": [anchors.ATTESTATION_POSTED_TOPIC],
        }
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"address": "0x" + "12" * 20},
        {"topics": [anchors.ATTESTATION_POSTED_TOPIC]},
        {"topics": ["0x" + "00" * 32, "0x" + "00" * 32, "0x" + "00" * 32]},
        {"data": "0x" + "00" * 32 * 4},
        {"data": "0xzz"},
        {"blockNumber": None},
        {"transactionHash": "0x1234"},
    ],
)
def test_a_log_that_is_not_an_attestation_event_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(RpcError):
        anchors.fetch(_node(lambda _: [_log(**changes)]), CONTRACT, 0, 9)


def test_removed_logs_are_skipped_and_the_rest_sorted_in_chain_order() -> None:
    logs = [_log(block=8, sequence=2), _log(block=3, sequence=1), _log(block=5, removed=True)]
    found = anchors.fetch(_node(lambda _: logs), CONTRACT, 0, 9)
    assert [(a.block, a.sequence) for a in found] == [(3, 1), (8, 2)]


def test_a_range_the_node_refuses_is_asked_again_in_halves() -> None:
    asked: list[tuple[int, int]] = []

    def answer(body: dict[str, Any]) -> Any:
        query = body["params"][0]
        first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        asked.append((first, last))
        if last - first >= 4:
            raise LookupError("query returned more than 10000 results")
        return [_log(block=b, sequence=b) for b in (2, 6) if first <= b <= last]

    found = anchors.fetch(_node(answer), CONTRACT, 0, 7)
    assert [a.block for a in found] == [2, 6]
    assert asked == [(0, 7), (0, 3), (4, 7)]


def test_a_single_block_the_node_refuses_is_an_error() -> None:
    def answer(body: dict[str, Any]) -> Any:
        raise LookupError("no")

    with pytest.raises(RpcRefused):
        anchors.fetch(_node(answer), CONTRACT, 4, 4)


def test_no_blocks_asks_nothing() -> None:
    def answer(body: dict[str, Any]) -> Any:
        raise AssertionError("asked")

    assert anchors.fetch(_node(answer), CONTRACT, 5, 4) == []
