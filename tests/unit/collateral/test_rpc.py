"""The verifier's hand-written JSON-RPC: it reads events and calls exactly as an Ethereum library
would (checked against eth_abi and keccak), and halves block ranges a node refuses as too large."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from gateway.collateral import rpc
from gateway.collateral.rpc import ChainEvent, Rpc, RpcError, RpcRefused

CONTRACT = "0x" + "5f" * 20
TX = "0x" + "ab" * 32
FROM = "0x" + "e1" * 20


def test_the_event_topics_and_selector_are_the_keccak_of_their_signatures() -> None:
    assert "0x" + keccak(text="Minted(address,uint256,bytes32)").hex() == rpc.MINTED_TOPIC
    assert "0x" + keccak(text="Redeemed(address,uint256,string)").hex() == rpc.REDEEMED_TOPIC
    assert "0x" + keccak(text="totalSupply()")[:4].hex() == rpc.TOTAL_SUPPLY


def _log(topics: list[str], data: bytes, block: int = 7, log_index: int = 2) -> dict[str, Any]:
    return {
        "address": CONTRACT.upper().replace("0X", "0x"),  # nodes may answer checksummed
        "topics": topics,
        "data": "0x" + data.hex(),
        "blockNumber": hex(block),
        "transactionHash": TX,
        "logIndex": hex(log_index),
        "removed": False,
    }


def _address_topic(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def _node(answer: Any, *, batches: bool = True) -> Rpc:
    """An Rpc whose node is ``answer(request) -> result`` (raise LookupError for an error)."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"jsonrpc": "2.0", "id": body["id"], "result": answer(body)}
        except LookupError as exc:
            error = {"code": -32005, "message": str(exc)}
            return {"jsonrpc": "2.0", "id": body["id"], "error": error}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if isinstance(body, list):
            if not batches:
                error = {"code": -32600, "message": "no batches"}
                return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": error})
            return httpx.Response(200, json=[respond(b) for b in reversed(body)])
        return httpx.Response(200, json=respond(body))

    return Rpc("http://node", httpx.Client(transport=httpx.MockTransport(handle)))


def test_a_minted_event_is_read_from_its_topics_and_data() -> None:
    request_id = "0x" + "07" * 32
    log = _log(
        [rpc.MINTED_TOPIC, _address_topic(FROM), request_id], abi_encode(["uint256"], [1500])
    )
    events = _node(lambda body: [log]).events(CONTRACT, 0, 10)
    assert events == [ChainEvent("mint", TX, 2, 7, FROM, 1500, request_id)]


@pytest.mark.parametrize("ref", ["KZ-wallet-7", "кошелёк", "x" * 64])
def test_a_redeemed_event_is_read_from_its_abi_encoded_data(ref: str) -> None:
    data = abi_encode(["uint256", "string"], [300, ref])
    log = _log([rpc.REDEEMED_TOPIC, _address_topic(FROM)], data)
    events = _node(lambda body: [log]).events(CONTRACT, 0, 10)
    assert events == [ChainEvent("burn", TX, 2, 7, FROM, 300, ref)]


def test_the_logs_query_asks_for_both_events_of_the_contract() -> None:
    seen: list[dict[str, Any]] = []
    _node(lambda body: seen.append(body) or []).events(CONTRACT, 3, 9)
    assert seen[0]["method"] == "eth_getLogs"
    assert seen[0]["params"] == [
        {
            "address": CONTRACT,
            "fromBlock": "0x3",
            "toBlock": "0x9",
            "topics": [[rpc.MINTED_TOPIC, rpc.REDEEMED_TOPIC]],
        }
    ]


def test_a_range_the_node_refuses_is_asked_again_in_halves() -> None:
    ranges: list[tuple[int, int]] = []

    def answer(body: dict[str, Any]) -> list[Any]:
        first, last = int(body["params"][0]["fromBlock"], 16), int(body["params"][0]["toBlock"], 16)
        if last - first >= 4:
            raise LookupError("block range too large")
        ranges.append((first, last))
        mint = [rpc.MINTED_TOPIC, _address_topic(FROM), "0x" + "07" * 32]
        return [
            _log(mint, abi_encode(["uint256"], [1]), block=b)
            for b in range(first, last + 1)
            if b % 5 == 0
        ]

    events = _node(answer).events(CONTRACT, 0, 19)
    assert [e.block for e in events] == [0, 5, 10, 15]
    assert ranges == [(0, 2), (3, 4), (5, 7), (8, 9), (10, 12), (13, 14), (15, 17), (18, 19)]


def test_events_come_back_in_chain_order_whatever_the_node_returns() -> None:
    mint = [rpc.MINTED_TOPIC, _address_topic(FROM), "0x" + "07" * 32]
    logs = [
        _log(mint, abi_encode(["uint256"], [1]), block=b, log_index=i)
        for b, i in [(9, 0), (3, 5), (3, 1)]
    ]
    events = _node(lambda body: logs).events(CONTRACT, 0, 10)
    assert [(e.block, e.log_index) for e in events] == [(3, 1), (3, 5), (9, 0)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"address": "0x" + "11" * 20}, "not the contract"),
        ({"topics": ["0x" + "00" * 32]}, "not a Minted or Redeemed event"),
        ({"data": "0x1234"}, "not a Minted or Redeemed event"),
        ({"blockNumber": "7"}, "expected a hex quantity"),
        ({"topics": [rpc.MINTED_TOPIC, "0x" + "ff" * 32, "0x" + "07" * 32]}, "not an address"),
    ],
)
def test_a_log_that_is_not_the_contracts_event_is_refused(
    change: dict[str, Any], message: str
) -> None:
    log = _log(
        [rpc.MINTED_TOPIC, _address_topic(FROM), "0x" + "07" * 32], abi_encode(["uint256"], [1])
    )
    with pytest.raises(RpcError, match=message):
        _node(lambda body: [{**log, **change}]).events(CONTRACT, 0, 10)


def test_total_supply_is_an_eth_call_at_the_block() -> None:
    seen: list[Any] = []

    def answer(body: dict[str, Any]) -> str:
        seen.append(body["params"])
        return "0x" + abi_encode(["uint256"], [12345]).hex()

    assert _node(answer).total_supply(CONTRACT, 42) == 12345
    assert seen == [[{"to": CONTRACT, "data": "0x18160ddd"}, "0x2a"]]


def test_an_error_object_is_a_refusal_and_a_dead_node_an_error() -> None:
    def refuse(body: dict[str, Any]) -> None:
        raise LookupError("missing trie node")

    with pytest.raises(RpcRefused, match="missing trie node"):
        _node(refuse).total_supply(CONTRACT, 1)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    dead = Rpc("http://node", httpx.Client(transport=httpx.MockTransport(down)))
    with pytest.raises(RpcError, match="connection refused") as caught:
        dead.chain_id()
    assert not isinstance(caught.value, RpcRefused)


def _chain_state(body: dict[str, Any]) -> Any:
    method, params = body["method"], body["params"]
    if method == "eth_getBlockByNumber":
        number = int(params[0], 16)
        return {"hash": "0x" + f"{number:064x}"} if number < 100 else None
    assert method == "eth_call"
    number = int(params[1], 16)
    if number < 10:
        raise LookupError("missing trie node")
    return "0x" + abi_encode(["uint256"], [number * 1000]).hex()


@pytest.mark.parametrize("batches", [True, False], ids=["batch", "one by one"])
def test_block_hashes_and_supplies_come_in_order_with_pruned_state_as_none(batches: bool) -> None:
    blocks = _node(_chain_state, batches=batches).blocks(CONTRACT, [5, 20, *range(30, 90)])
    assert blocks[:2] == [("0x" + f"{5:064x}", None), ("0x" + f"{20:064x}", 20_000)]
    assert [supply for _, supply in blocks[2:]] == [n * 1000 for n in range(30, 90)]


def test_a_block_the_node_does_not_have_is_an_error() -> None:
    with pytest.raises(RpcError, match="the node has no block 150"):
        _node(_chain_state).blocks(CONTRACT, [20, 150])
