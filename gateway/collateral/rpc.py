"""The few Ethereum JSON-RPC calls the verifier makes, by hand, against the user's own node.

No Ethereum library is used, so that a reader can see every byte that is interpreted:

- ``eth_chainId``, ``eth_blockNumber``, ``eth_getBlockByNumber`` (for a block's hash);
- ``eth_call`` of ``totalSupply()`` (selector ``0x18160ddd``) at a given block (these two in
  JSON-RPC batches, one per 50 blocks, or one by one if the node takes no batches);
- ``eth_getLogs`` for the contract's two events that change the supply::

      Minted(address indexed to, uint256 amount, bytes32 indexed requestId)
        topic0 = keccak256("Minted(address,uint256,bytes32)")
        topics = [topic0, to, requestId], data = amount
      Redeemed(address indexed from, uint256 amount, string dtWalletRef)
        topic0 = keccak256("Redeemed(address,uint256,string)")
        topics = [topic0, from], data = amount, offset, length, UTF-8 bytes (ABI-encoded)

  (The contract changes its supply only in ``mint`` and ``redeem``, which emit these.) A node
  that refuses a range of blocks as too large gets it again in halves.

Errors: :class:`RpcError` when the node cannot be reached or answers something malformed;
:class:`RpcRefused` (a subclass) when it answers with a JSON-RPC error object.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

MINTED_TOPIC = "0xc263b302aec62d29105026245f19e16f8e0137066ccd4a8bd941f716bd4096bb"
REDEEMED_TOPIC = "0x784e131f41825c0f4dedaf1b303cfd417f3603b2e95ed4a0c0bdc2176dbbc3ee"
TOTAL_SUPPLY = "0x18160ddd"


class RpcError(Exception):
    """The node did not answer, or answered something that is not what the call returns."""


class RpcRefused(RpcError):
    """The node answered the call with a JSON-RPC error object."""


@dataclass(frozen=True)
class ChainEvent:
    """A Minted or Redeemed event: ``account`` is ``to`` (mint) or ``from`` (burn),
    ``reference`` the request id (mint) or the DT wallet reference (burn)."""

    kind: Literal["mint", "burn"]
    tx_hash: str
    log_index: int
    block: int
    account: str
    amount: int
    reference: str

    def describe(self) -> str:
        event = "Minted" if self.kind == "mint" else "Redeemed"
        side = "to" if self.kind == "mint" else "from"
        return (
            f"{event} event tx {self.tx_hash} log {self.log_index} (block {self.block}, "
            f"amount {self.amount}, {side} {self.account})"
        )


def _quantity(value: object, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(f"{what}: expected a hex quantity, found {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcError(f"{what}: expected a hex quantity, found {value!r}") from None


def _data(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(f"{what}: expected hex data, found {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RpcError(f"{what}: expected hex data, found {value!r}") from None


def _word(value: object, what: str) -> bytes:
    data = _data(value, what)
    if len(data) != 32:
        raise RpcError(f"{what}: expected 32 bytes, found {len(data)}")
    return data


def _address(topic: object, what: str) -> str:
    word = _word(topic, what)
    if any(word[:12]):
        raise RpcError(f"{what}: not an address: {topic!r}")
    return "0x" + word[12:].hex()


class Rpc:
    """A JSON-RPC endpoint over ``client`` (which may be shared between threads)."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url
        self._client = client
        self._ids = itertools.count(1)

    def _post(self, payload: object, what: str) -> Any:
        try:
            response = self._client.post(self.url, json=payload)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as exc:
            raise RpcError(f"{what} at {self.url}: {exc}") from exc
        except ValueError as exc:
            raise RpcError(f"{what} at {self.url}: the answer is not JSON") from exc

    def _result(self, method: str, answer: object) -> Any:
        if not isinstance(answer, dict):
            raise RpcError(f"{method} at {self.url}: the answer is not a JSON-RPC response")
        if answer.get("error") is not None:
            raise RpcRefused(f"{method} at {self.url}: {answer['error']}")
        if "result" not in answer:
            raise RpcError(f"{method} at {self.url}: the answer has no result")
        return answer["result"]

    def call(self, method: str, *params: Any) -> Any:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        return self._result(method, self._post(request, method))

    def call_many(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one JSON-RPC batch: each one's result, or its :class:`RpcRefused`
        (returned, not raised). A node that does not take batches gets them one by one."""
        ids = [next(self._ids) for _ in calls]
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        answers = self._post(batch, "a batch of calls")
        if not isinstance(answers, list):  # batches not supported: one error object instead
            answers = [self._post(request, str(request["method"])) for request in batch]
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        results: list[Any] = []
        for i, (method, _) in zip(ids, calls, strict=True):
            try:
                results.append(self._result(method, by_id.get(i)))
            except RpcRefused as refused:
                results.append(refused)
        return results

    def chain_id(self) -> int:
        return _quantity(self.call("eth_chainId"), "eth_chainId")

    def block_number(self) -> int:
        return _quantity(self.call("eth_blockNumber"), "eth_blockNumber")

    def total_supply(self, contract: str, block: int) -> int:
        result = self.call("eth_call", {"to": contract, "data": TOTAL_SUPPLY}, hex(block))
        return int.from_bytes(_word(result, f"totalSupply() at block {block}"), "big")

    def blocks(self, contract: str, numbers: Sequence[int]) -> list[tuple[str, int | None]]:
        """For each block: its hash, and totalSupply() at it (None if the node refuses: it has
        pruned that block's state). In batches of 50 blocks."""
        out: list[tuple[str, int | None]] = []
        for at in range(0, len(numbers), 50):
            chunk = numbers[at : at + 50]
            calls: list[tuple[str, Sequence[Any]]] = []
            for n in chunk:
                calls.append(("eth_getBlockByNumber", (hex(n), False)))
                calls.append(("eth_call", ({"to": contract, "data": TOTAL_SUPPLY}, hex(n))))
            results = self.call_many(calls)
            for n, block, supply in zip(chunk, results[::2], results[1::2], strict=True):
                if isinstance(block, RpcRefused):
                    raise block
                if not isinstance(block, dict):
                    raise RpcError(f"eth_getBlockByNumber: the node has no block {n}")
                block_hash = "0x" + _word(block.get("hash"), f"hash of block {n}").hex()
                if isinstance(supply, RpcRefused):
                    out.append((block_hash, None))
                else:
                    word = _word(supply, f"totalSupply() at block {n}")
                    out.append((block_hash, int.from_bytes(word, "big")))
        return out

    def events(self, contract: str, first: int, last: int) -> list[ChainEvent]:
        """The contract's Minted and Redeemed events in blocks ``first..last``, in chain order."""
        if last < first:
            return []
        query = {
            "address": contract,
            "fromBlock": hex(first),
            "toBlock": hex(last),
            "topics": [[MINTED_TOPIC, REDEEMED_TOPIC]],
        }
        try:
            logs = self.call("eth_getLogs", query)
        except RpcRefused:
            if first == last:
                raise
            middle = (first + last) // 2
            return self.events(contract, first, middle) + self.events(contract, middle + 1, last)
        if not isinstance(logs, list):
            raise RpcError(f"eth_getLogs: expected a list, found {type(logs).__name__}")
        events = [_event(log, contract) for log in logs if not log.get("removed")]
        return sorted(events, key=lambda e: (e.block, e.log_index))


def _event(log: dict[str, Any], contract: str) -> ChainEvent:
    where = f"eth_getLogs: log {log.get('transactionHash')}:{log.get('logIndex')}"
    if str(log.get("address", "")).lower() != contract.lower():
        raise RpcError(f"{where}: from address {log.get('address')}, not the contract")
    topics = log.get("topics")
    if not isinstance(topics, list) or not topics:
        raise RpcError(f"{where}: no topics")
    tx_hash = "0x" + _word(log.get("transactionHash"), where).hex()
    log_index = _quantity(log.get("logIndex"), where)
    block = _quantity(log.get("blockNumber"), where)
    data = _data(log.get("data"), where)
    topic0 = str(topics[0]).lower()
    if topic0 == MINTED_TOPIC and len(topics) == 3 and len(data) == 32:
        to = _address(topics[1], where)
        request_id = "0x" + _word(topics[2], where).hex()
        amount = int.from_bytes(data, "big")
        return ChainEvent("mint", tx_hash, log_index, block, to, amount, request_id)
    if topic0 == REDEEMED_TOPIC and len(topics) == 2 and len(data) >= 96:
        sender = _address(topics[1], where)
        amount = int.from_bytes(data[:32], "big")
        offset = int.from_bytes(data[32:64], "big")
        length = int.from_bytes(data[offset : offset + 32], "big") if offset <= len(data) else -1
        text = data[offset + 32 : offset + 32 + length]
        if length < 0 or len(text) != length:
            raise RpcError(f"{where}: Redeemed data does not hold an ABI string")
        # Invalid UTF-8 (which the contract does not forbid) is compared as U+FFFD.
        ref = text.decode("utf-8", errors="replace")
        return ChainEvent("burn", tx_hash, log_index, block, sender, amount, ref)
    raise RpcError(f"{where}: not a Minted or Redeemed event: topics {topics}")
