"""The nonce allocator: consecutive nonces, handed to the node in order, re-read after a failure."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_typing import ChecksumAddress

from gateway.stablecoin.transactions import NonceAllocator

ALICE = ChecksumAddress("0x" + "aa" * 20)  # type: ignore[arg-type]
BOB = ChecksumAddress("0x" + "bb" * 20)  # type: ignore[arg-type]


class Node:
    """Counts the reads of the pending nonce and records what reaches it, in arrival order."""

    def __init__(self, pending: int = 7) -> None:
        self.pending = pending
        self.reads = 0
        self.received: list[int] = []
        self._lock = threading.Lock()

    def fetch(self, _address: ChecksumAddress) -> int:
        self.reads += 1
        return self.pending

    def receive(self, nonce: int) -> None:
        time.sleep(0.001)  # let the other threads run while a send is in flight
        with self._lock:
            self.received.append(nonce)
            self.pending = max(self.pending, nonce + 1)


def test_consecutive_nonces_from_the_pending_count_read_once() -> None:
    node = Node(pending=7)
    nonces = NonceAllocator(node.fetch)
    for expected in (7, 8, 9):
        with nonces.sending(ALICE) as nonce:
            assert nonce == expected
    assert node.reads == 1


def test_concurrent_senders_reach_the_node_in_nonce_order() -> None:
    node = Node(pending=0)
    nonces = NonceAllocator(node.fetch)

    def send(_: int) -> None:
        with nonces.sending(ALICE) as nonce:
            node.receive(nonce)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(64)))
    assert node.received == list(range(64))


def test_a_failed_send_uses_no_nonce_and_the_next_one_rereads_the_node() -> None:
    node = Node(pending=3)
    nonces = NonceAllocator(node.fetch)

    def send_fails() -> None:
        with nonces.sending(ALICE) as nonce:
            assert nonce == 3
            raise ConnectionError("the node did not answer")

    with pytest.raises(ConnectionError):
        send_fails()
    node.pending = 4  # ... but it had received the transaction after all
    with nonces.sending(ALICE) as nonce:
        assert nonce == 4
    assert node.reads == 2


def test_senders_do_not_wait_for_each_other() -> None:
    node = Node()
    nonces = NonceAllocator(node.fetch)
    inside = threading.Event()
    release = threading.Event()

    def hold_alice() -> None:
        with nonces.sending(ALICE):
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold_alice)
    holder.start()
    assert inside.wait(5)
    with nonces.sending(BOB) as nonce:  # does not block on ALICE's send
        assert nonce == 7
    release.set()
    holder.join()
