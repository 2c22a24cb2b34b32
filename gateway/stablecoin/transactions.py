"""Sending the chain client's transactions: fees, nonces, gas, signing, receipts, confirmations.

Transactions are signed locally (eth-account, with coincurve) and sent raw, so the node never
holds a key. Nonces come from a thread-safe :class:`NonceAllocator` seeded from the node's
``pending`` count: it survives restarts (the chain is the source of truth) and concurrent senders
in other processes (a nonce error resyncs and retries); each sender's transactions reach the node
in nonce order. Gas is estimated before a nonce is taken, so a call that would revert fails early
with the contract's error and burns no nonce. A transaction mined as failed is replayed as a call
on its parent block to name the contract's reason.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3Exception

from gateway.stablecoin.chain_errors import (
    ChainUnavailable,
    ContractReverted,
    InvalidChainInput,
    TransactionNotConfirmed,
    reverted,
    translating,
)
from gateway.stablecoin.chain_values import SubmittedTx, TxResult
from gateway.stablecoin.contract import ContractArtifact


class NonceAllocator:
    """Hands out consecutive nonces per sender and keeps each sender's sends in nonce order.

    :meth:`sending` holds the sender's lock from taking a nonce until the node has the
    transaction, so the node receives a sender's transactions in nonce order and never sees a
    gap. Out-of-order arrival is legal but fragile: a send that fails after later nonces went out
    strands them, and anvil's instant mining can leave out-of-order transactions unmined
    (foundry-rs/foundry#10122). The lock costs one local RPC per transaction per sender.

    Seeded lazily from ``eth_getTransactionCount(addr, "pending")``, so a restarted process
    continues where the chain is. A send that fails (a nonce error because another process sent
    with the same key, or a send whose fate is unknown) makes the next one re-read it.
    """

    def __init__(self, fetch_pending: Callable[[ChecksumAddress], int]) -> None:
        self._fetch = fetch_pending
        self._next: dict[ChecksumAddress, int] = {}
        self._locks: dict[ChecksumAddress, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def sending(self, address: ChecksumAddress) -> Iterator[int]:
        """The sender's next nonce, held until the block ends: it is used up if the block
        succeeds, and forgotten (re-read from the node next time) if it raises."""
        with self._guard:
            lock = self._locks.setdefault(address, threading.Lock())
        with lock:
            nonce = self._next.get(address)
            if nonce is None:
                nonce = self._fetch(address)
            try:
                yield nonce
            except BaseException:
                self._next.pop(address, None)
                raise
            self._next[address] = nonce + 1


def _is_nonce_error(message: str) -> bool:
    text = message.lower()
    return "nonce" in text or "replacement transaction underpriced" in text


def _is_already_known(message: str) -> bool:
    text = message.lower()
    return "already known" in text or "already imported" in text


class SendOptions(TypedDict, total=False):
    """How a :class:`TransactionSender` sends and awaits transactions (each optional, with
    the sender's default), for whatever builds one on a caller's behalf."""

    confirmations: int
    poll_latency: float
    receipt_timeout: float
    gas_margin: float
    fee_cache_seconds: float
    chain_id: int | None


class TransactionSender:
    """Signs, sends and awaits the transactions of one chain client.

    ``confirmations``: a transaction counts as done when its block has this many blocks on top,
    itself included (1 = mined). ``poll_latency`` is the pause between receipt polls: keep it
    small, web3 (not the node) is the bottleneck on a local chain. ``fee_cache_seconds``: reuse
    the pending block's base fee this long (0: read it for every transaction); the max fee is
    twice the base fee, so a second of staleness is safe. ``chain_id``: the chain the node
    must serve (None: whichever it does), checked when the chain id is first needed.
    """

    def __init__(
        self,
        w3: Web3,
        artifact: ContractArtifact,
        *,
        confirmations: int = 1,
        poll_latency: float = 0.01,
        receipt_timeout: float = 60.0,
        gas_margin: float = 1.2,
        fee_cache_seconds: float = 0.0,
        chain_id: int | None = None,
    ) -> None:
        if confirmations < 1:
            raise InvalidChainInput("confirmations must be at least 1 (1 = mined)")
        self.w3 = w3
        self.artifact = artifact
        self.confirmations = confirmations
        self.poll_latency = poll_latency
        self.receipt_timeout = receipt_timeout
        self.gas_margin = gas_margin
        self.fee_cache_seconds = fee_cache_seconds
        self._fee_cache: tuple[float, dict[str, int]] | None = None
        self.nonces = NonceAllocator(
            lambda addr: int(self.w3.eth.get_transaction_count(addr, "pending"))
        )
        self._expected_chain_id = chain_id
        self._chain_id: int | None = None
        self._priority_fee: int | None = None

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            with translating(self.artifact, "eth_chainId"):
                served = int(self.w3.eth.chain_id)
            expected = self._expected_chain_id
            if expected is not None and served != expected:
                raise ChainUnavailable(f"the node serves chain {served}, not chain {expected}")
            self._chain_id = served
        return self._chain_id

    def send(
        self, sender: LocalAccount, to: ChecksumAddress | None, data: bytes, function: str
    ) -> TxResult:
        """Submit and wait: ``to`` None deploys ``data`` as a contract."""
        return self.wait(self.submit(sender, to, data, function))

    def submit(
        self,
        sender: LocalAccount,
        to: ChecksumAddress | None,
        data: bytes,
        function: str,
        gas_limit: int | None = None,
    ) -> SubmittedTx:
        """Sign and send without waiting; with ``gas_limit``, no estimate first."""
        tx: dict[str, Any] = {"from": sender.address, "data": HexBytes(data), "value": 0}
        if to is not None:
            tx["to"] = to
        if gas_limit is None:
            with translating(self.artifact, function):
                gas = int(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
            gas_limit = int(gas * self.gas_margin)
        tx.pop("from")
        tx.update(self._fees())
        tx["gas"] = gas_limit
        tx["chainId"] = self.chain_id

        attempts = 3
        for attempt in range(attempts):
            try:
                with self.nonces.sending(sender.address) as nonce:
                    tx["nonce"] = nonce
                    signed = sender.sign_transaction(tx)
                    with translating(self.artifact, function):
                        self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except ChainUnavailable as exc:
                message = str(exc)
                if _is_already_known(message):
                    break  # an earlier attempt with these bytes got through: wait for it
                if _is_nonce_error(message) and attempt + 1 < attempts:
                    continue  # another sender used the nonce: the next attempt re-reads it
                raise
            break
        # The sender goes back in: explaining a failure replays the call as it was sent.
        return SubmittedTx(
            HexBytes(signed.hash).to_0x_hex(), function, {**tx, "from": sender.address}
        )

    def wait(self, submitted: SubmittedTx, timeout: float | None = None) -> TxResult:
        """Wait for a submitted transaction's receipt and confirmations (at most ``timeout``
        seconds, default ``receipt_timeout``: then :class:`TransactionNotConfirmed`)."""
        tx_hash = bytes(HexBytes(submitted.tx_hash))
        function = submitted.function
        deadline = time.monotonic() + (self.receipt_timeout if timeout is None else timeout)
        while True:
            try:
                receipt = self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(tx_hash),
                    timeout=max(deadline - time.monotonic(), 0.001),
                    poll_latency=self.poll_latency,
                )
            except TimeExhausted as exc:
                raise TransactionNotConfirmed(
                    f"{function}: no receipt for {HexBytes(tx_hash).to_0x_hex()}"
                ) from exc
            except (requests.RequestException, OSError, Web3Exception) as exc:
                raise ChainUnavailable(f"{function}: {exc}") from exc
            block_number = int(receipt["blockNumber"])
            if self._confirmed(block_number, deadline, tx_hash, HexBytes(receipt["blockHash"])):
                break
            # The block was reorganised away: wait for the transaction's new inclusion.
        if receipt["status"] != 1:
            raise self._explain_failure(submitted.tx, block_number, function)
        address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=HexBytes(tx_hash).to_0x_hex(),
            block_number=block_number,
            block_hash=HexBytes(receipt["blockHash"]).to_0x_hex(),
            gas_used=int(receipt["gasUsed"]),
            contract_address=to_checksum_address(address) if address else None,
        )

    def _fees(self) -> dict[str, int]:
        cached = self._fee_cache
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        fees = self._read_fees()
        if self.fee_cache_seconds > 0:
            self._fee_cache = (time.monotonic() + self.fee_cache_seconds, fees)
        return fees

    def _read_fees(self) -> dict[str, int]:
        with translating(self.artifact, "fees"):
            base_fee = self.w3.eth.get_block("pending").get("baseFeePerGas")
            if base_fee is None:
                return {"gasPrice": int(self.w3.eth.gas_price)}
            if self._priority_fee is None:
                try:
                    self._priority_fee = int(self.w3.eth.max_priority_fee)
                except (Web3Exception, ValueError):
                    self._priority_fee = 10**9
        return {
            "maxFeePerGas": 2 * int(base_fee) + self._priority_fee,
            "maxPriorityFeePerGas": self._priority_fee,
        }

    def _confirmed(
        self, block_number: int, deadline: float, tx_hash: bytes, block_hash: HexBytes
    ) -> bool:
        if self.confirmations == 1:
            return True
        target = block_number + self.confirmations - 1
        with translating(self.artifact, "eth_blockNumber"):
            while self.w3.eth.block_number < target:
                if time.monotonic() > deadline:
                    raise TransactionNotConfirmed(
                        f"{HexBytes(tx_hash).to_0x_hex()} has fewer than "
                        f"{self.confirmations} confirmations"
                    )
                time.sleep(self.poll_latency)
            try:
                again = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return False
        return HexBytes(again["blockHash"]) == block_hash

    def _explain_failure(
        self, tx: dict[str, Any], block_number: int, function: str
    ) -> ContractReverted:
        """A mined transaction failed: replay it as a call on its parent block for the reason."""
        call: dict[str, Any] = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            with translating(self.artifact, function):
                self.w3.eth.call(call, block_identifier=max(block_number - 1, 0))  # type: ignore[arg-type]
        except ContractReverted as exc:
            return exc
        except ChainUnavailable:
            pass
        return reverted(None, function)


__all__ = ["NonceAllocator", "SendOptions", "TransactionSender"]
