"""An anvil node the tests can kill and start again on the same port, as a node restored from a
dump comes back: its blocks, receipts and current state, and none of its past blocks' states
(``anvil_dumpState(false)``), like a pruned node or one restarted from a snapshot."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from gateway.messaging.serving import free_port
from gateway.stablecoin.devchain import (
    ANVIL_CHAIN_ID,
    ANVIL_HARDFORK,
    DEV_MNEMONIC,
    DevChain,
    dev_accounts,
    find_anvil,
)
from tests.support.anvil import require_anvil
from tests.support.waiting import wait_for

ACCOUNTS = 12


@dataclass
class Node:
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    state: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start anvil (from the last dump, if any) and wait until it answers."""
        require_anvil()
        binary = find_anvil()
        assert binary is not None
        self.port = self.port or free_port()
        command = [
            str(binary),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--chain-id", str(ANVIL_CHAIN_ID), "--hardfork", ANVIL_HARDFORK),
            *("--accounts", str(ACCOUNTS), "--mnemonic", DEV_MNEMONIC),
            *(("--load-state", str(self.state)) if self.state else ()),
        ]
        log = (self.workdir / "anvil.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(
            lambda: self.rpc("eth_chainId"),
            "anvil answering",
            timeout=30,
            proc=self.proc,
            tolerate=(httpx.HTTPError,),
            interval=0.05,
        )

    def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        answer = httpx.post(self.url, json=body, timeout=10).json()
        assert "error" not in answer, answer
        return answer["result"]

    def kill(self) -> None:
        """Dump the chain without its past states, then ``kill -9``."""
        assert self.proc is not None
        dump = self.rpc("anvil_dumpState", False)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.state = self.workdir / "anvil-state.json"
        state = json.loads(gzip.decompress(bytes.fromhex(dump.removeprefix("0x"))))
        self.state.write_text(json.dumps(state))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def devchain(self) -> DevChain:
        w3 = Web3(HTTPProvider(self.url, request_kwargs={"timeout": 30}))
        return DevChain("anvil", w3, dev_accounts(ACCOUNTS), self.url)
