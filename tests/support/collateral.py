"""A collateral log and a chain that the verifier reads over real HTTP on 127.0.0.1.

:class:`Chain` is a tiny Ethereum JSON-RPC endpoint answering the few methods the verifier calls
from an in-memory list of Minted/Redeemed events and reserve attestations, the log's anchors
(the true edge of these tests: the anvil end-to-end runs elsewhere). :class:`Log` builds a log in
memory with ``tlog.Frontier`` and ``note.sign_note`` and serves it as static C2SP tiles;
:class:`History` writes the honest story of a gateway into both (deposit, mint, statement,
redeem, payout, anchor) and lets a test tamper with it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.collateral import entries as fmt
from gateway.collateral import note, tlog
from gateway.collateral.anchors import ATTESTATION_POSTED_TOPIC
from gateway.collateral.rpc import MINTED_TOPIC, REDEEMED_TOPIC

CHAIN_ID = 31337
CONTRACT = "0x" + "5f" * 20
ORIGIN = f"dt-gateway/collateral/{CHAIN_ID}/{CONTRACT}"
EXCHANGE = "0x" + "e1" * 20
TIME = "2026-12-06T14:44:30.123Z"


def _word(value: int | bytes) -> str:
    data = value if isinstance(value, bytes) else value.to_bytes(32, "big")
    return data.rjust(32, b"\0").hex()


@dataclass
class Event:
    kind: str  # "mint" | "burn"
    block: int
    tx_hash: str
    log_index: int
    account: str
    amount: int
    reference: str  # request id (mint) or DT wallet reference (burn)

    def rpc_log(self) -> dict[str, Any]:
        account = "0x" + _word(bytes.fromhex(self.account[2:]))
        if self.kind == "mint":
            topics, data = [MINTED_TOPIC, account, self.reference], _word(self.amount)
        else:
            ref = self.reference.encode()
            padded = ref + b"\0" * (-len(ref) % 32)
            topics = [REDEEMED_TOPIC, account]
            data = _word(self.amount) + _word(64) + _word(len(ref)) + padded.hex()
        return {
            "address": CONTRACT,
            "topics": topics,
            "data": "0x" + data,
            "blockNumber": hex(self.block),
            "transactionHash": self.tx_hash,
            "logIndex": hex(self.log_index),
            "removed": False,
        }


@dataclass
class Attested:
    """An ``AttestationPosted`` event: a reserve and the log's (size, root) it anchors."""

    block: int
    tx_hash: str
    sequence: int
    reserve: int
    size: int
    root: bytes

    def rpc_log(self) -> dict[str, Any]:
        words = [self.reserve, 1_796_565_600, b"\x5e" * 32, self.size, self.root]
        attestor = "0x" + _word(b"\xa7" * 20)
        return {
            "address": CONTRACT,
            "topics": [ATTESTATION_POSTED_TOPIC, "0x" + _word(self.sequence), attestor],
            "data": "0x" + "".join(_word(w) for w in words),
            "blockNumber": hex(self.block),
            "transactionHash": self.tx_hash,
            "logIndex": hex(0),
            "removed": False,
        }


class Server:
    """An HTTP server on 127.0.0.1 in a thread; ``answer(method, path, body)`` makes responses."""

    def __init__(self, answer: Callable[[str, str, bytes], tuple[int, bytes]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, body = answer(method, self.path, self.rfile.read(length))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Chain:
    """The contract's events, one block per event, and the methods the verifier calls."""

    events: list[Event] = field(default_factory=list)
    attestations: list[Attested] = field(default_factory=list)
    head: int = 1
    chain_id: int = CHAIN_ID
    calls: Counter[str] = field(default_factory=Counter)
    archive: bool = True
    batches: bool = True

    def block_hash(self, number: int) -> str:
        return "0x" + hashlib.sha256(b"block %d" % number).hexdigest()

    def supply_at(self, block: int) -> int:
        return sum(
            e.amount if e.kind == "mint" else -e.amount for e in self.events if e.block <= block
        )

    def add(self, kind: str, account: str, amount: int, reference: str) -> Event:
        self.head += 1
        tx = "0x" + hashlib.sha256(b"tx %d" % self.head).hexdigest()
        event = Event(kind, self.head, tx, 0, account, amount, reference)
        self.events.append(event)
        return event

    def mine(self) -> int:
        self.head += 1
        return self.head

    def attest(self, reserve: int, size: int, root: bytes) -> Attested:
        """A reserve attestation anchoring the log's tree (``size``, ``root``), in a new block."""
        self.head += 1
        tx = "0x" + hashlib.sha256(b"attestation %d" % self.head).hexdigest()
        attested = Attested(self.head, tx, len(self.attestations) + 1, reserve, size, root)
        self.attestations.append(attested)
        return attested

    def handle(self, request: dict[str, Any]) -> Any:
        method, params = request["method"], request["params"]
        self.calls[method] += 1
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            return (
                {"number": params[0], "hash": self.block_hash(number)}
                if number <= self.head
                else None
            )
        if method == "eth_call":
            assert params[0] == {"to": CONTRACT, "data": "0x18160ddd"}
            block = int(params[1], 16)
            if not self.archive and block < self.head:
                raise LookupError("missing trie node")
            return "0x" + _word(self.supply_at(block))
        if method == "eth_getLogs":
            query = params[0]
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            wanted = query["topics"][0]
            topics = set(wanted) if isinstance(wanted, list) else {wanted}
            logs = [x.rpc_log() for x in [*self.events, *self.attestations]]
            return sorted(
                (
                    x
                    for x in logs
                    if x["topics"][0] in topics and first <= int(x["blockNumber"], 16) <= last
                ),
                key=lambda x: int(x["blockNumber"], 16),
            )
        raise LookupError(f"method {method} not found")

    def respond(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"jsonrpc": "2.0", "id": request["id"], "result": self.handle(request)}
        except LookupError as exc:
            error = {"code": -32000, "message": str(exc)}
            return {"jsonrpc": "2.0", "id": request["id"], "error": error}

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        request = json.loads(body)
        if isinstance(request, list):
            self.calls["batch"] += 1
            if not self.batches:
                error = {"code": -32600, "message": "batches are not supported"}
                return 200, json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
            return 200, json.dumps([self.respond(r) for r in reversed(request)]).encode()
        return 200, json.dumps(self.respond(request)).encode()


@dataclass
class Log:
    """A log built in memory and served as tiles under ``/collateral/log/``."""

    signer: note.Signer
    entries: list[bytes] = field(default_factory=list)
    timestamp: Callable[[], int] = lambda: int(time.time())
    requests: list[str] = field(default_factory=list)
    replaced: dict[int, bytes] = field(default_factory=dict)
    """Entry bytes served in bundles in place of the logged ones (tiles and root unchanged)."""
    checkpoint_override: bytes | None = None
    hidden: set[str] = field(default_factory=set)
    """Paths answered 404."""

    def tree(self) -> tuple[tlog.Frontier, dict[tuple[int, int], bytes]]:
        frontier, stored = tlog.Frontier(), {}
        for entry in self.entries:
            for level, index, digest in frontier.append(tlog.leaf_hash(entry)):
                stored[level, index] = digest
        return frontier, stored

    def checkpoint(self) -> bytes:
        if self.checkpoint_override is not None:
            return self.checkpoint_override
        frontier, _ = self.tree()
        body = note.Checkpoint(
            ORIGIN, frontier.size, frontier.root(), (f"timestamp {self.timestamp()}",)
        ).body()
        return note.sign_note(body, [self.signer]).encode()

    def serve(self, path: str) -> bytes | None:
        if path in self.hidden:
            return None
        if path == "checkpoint":
            return self.checkpoint()
        try:
            level, n, width = tlog.parse_tile_path(path)
        except ValueError:
            return None
        count = width or tlog.TILE_WIDTH
        if level is None:
            first = n * tlog.TILE_WIDTH
            if first + count > len(self.entries):
                return None
            bundle = [self.replaced.get(i, self.entries[i]) for i in range(first, first + count)]
            return tlog.encode_bundle(bundle)
        if not tlog.tile_in_tree(level, n, width, len(self.entries)):
            return None
        _, stored = self.tree()
        return b"".join(stored[pair] for pair in tlog.tile_hashes(level, n, width))

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        prefix = "/collateral/log/"
        self.requests.append(path)
        data = self.serve(path[len(prefix) :]) if path.startswith(prefix) else None
        return (404, b"not found\n") if data is None else (200, data)

    def bundle_requests(self) -> list[str]:
        return [p.removeprefix("/collateral/log/") for p in self.requests if "/entries/" in p]


@dataclass
class History:
    """An honest gateway's story, written into the log and the chain as it happens."""

    log: Log
    chain: Chain
    balance: int = 0
    supply: int = 0
    deposits: int = 0

    def dt(self, amount: int, op: str = "transfer", transfer_id: str | None = None) -> None:
        self.deposits += 1
        self.balance += amount
        self.log.entries.append(
            fmt.encode(
                fmt.DtMovement(
                    transfer_id=transfer_id or f"t-{self.deposits}",
                    op=op,
                    amount=amount,
                    balance=self.balance,
                    time=TIME,
                )
            )
        )

    def log_event(self, event: Event) -> None:
        if event.kind == "mint":
            self.supply += event.amount
            entry: fmt.Entry = fmt.ChainMint(
                tx_hash=event.tx_hash,
                log_index=event.log_index,
                block=event.block,
                to=event.account,
                amount=event.amount,
                request_id=event.reference,
                transfer_id=None,
                supply=self.supply,
            )
        else:
            self.supply -= event.amount
            entry = fmt.ChainBurn(
                tx_hash=event.tx_hash,
                log_index=event.log_index,
                block=event.block,
                from_=event.account,
                amount=event.amount,
                dt_wallet_ref=event.reference,
                transfer_id=fmt.redemption_transfer_id(event.tx_hash, event.log_index),
                supply=self.supply,
            )
        self.log.entries.append(fmt.encode(entry))

    def mint(self, amount: int) -> Event:
        """A deposit, then its mint on chain and in the log."""
        self.dt(amount)
        request_id = "0x" + hashlib.sha256(b"request %d" % self.deposits).hexdigest()
        event = self.chain.add("mint", EXCHANGE, amount, request_id)
        self.log_event(event)
        return event

    def redeem(self, amount: int) -> Event:
        """A burn on chain and in the log, then its DT payout."""
        event = self.chain.add("burn", EXCHANGE, amount, "KZ-exchange-wallet")
        self.log_event(event)
        self.dt(-amount, "transfer", fmt.redemption_transfer_id(event.tx_hash, event.log_index))
        return event

    def anchor(self, reserve: int | None = None) -> Attested:
        """The gateway attests the reserve the log shows now, anchoring the log as it is."""
        frontier, _ = self.log.tree()
        return self.chain.attest(
            self.balance if reserve is None else reserve, frontier.size, frontier.root()
        )

    def statement(self) -> None:
        block = self.chain.mine()
        self.log.entries.append(
            fmt.encode(
                fmt.Statement(
                    block=block,
                    block_hash=self.chain.block_hash(block),
                    supply=self.supply,
                    reserve=self.balance,
                    time=TIME,
                )
            )
        )


@contextmanager
def serving(history: History) -> Iterator[tuple[str, str]]:
    """The log's URL and the chain's RPC URL while the block runs."""
    log_server, rpc_server = Server(history.log.answer), Server(history.chain.answer)
    try:
        yield log_server.url, rpc_server.url
    finally:
        log_server.close()
        rpc_server.close()
