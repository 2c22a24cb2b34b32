"""anvil as a process the chaos run can ``kill -9`` and start again with its chain intact.

A real node that crashes keeps its mined blocks and loses its mempool. anvil keeps everything
in memory, so before the kill its mining is switched off and its state dumped
(``anvil_dumpState(false)``: accounts, blocks, receipts and the current state, without the
state at each past block, as a pruned node keeps them: the redemption watcher starts each
range from the supply its newest chain entry records, not from a past block's state); it
starts again on the same port from that dump (``--load-state``). What it loses is what a
crashed node loses: transactions sent after mining stopped, which were never mined (their
senders must send them again).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.stablecoin.devchain import ANVIL_CHAIN_ID, ANVIL_HARDFORK, DEV_MNEMONIC, find_anvil
from ops.chaos.processes import wait_for


@dataclass
class Anvil:
    port: int
    workdir: Path
    accounts: int = 12
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    lost_mempool: int = 0
    """Transactions that were pending when a kill took the mempool with it."""
    _state: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        binary = find_anvil()
        if binary is None:
            raise RuntimeError("anvil is missing: run ops/setup-toolchain")
        command = [
            str(binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(ANVIL_CHAIN_ID),
            "--hardfork",
            ANVIL_HARDFORK,
            "--accounts",
            str(self.accounts),
            "--mnemonic",
            DEV_MNEMONIC,
        ]
        if self._state is not None:
            command += ["--load-state", str(self._state)]
        self.starts += 1
        with (self.workdir / "anvil.log").open("ab") as log:
            log.write(f"\n===== start #{self.starts}\n".encode())
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for("anvil to answer", lambda: self._alive_and_answering(), timeout=30)

    def _alive_and_answering(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"anvil exited with {self.proc.returncode}")
        try:
            return bool(self.rpc("eth_chainId"))
        except httpx.HTTPError:
            return False

    def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        answer = httpx.post(self.url, json=body, timeout=10).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def kill(self) -> None:
        """Stop mining, keep the chain, ``kill -9``; :meth:`start` resumes from the dump."""
        if not self.alive:
            return
        assert self.proc is not None
        self.rpc("evm_setAutomine", False)
        dump = self.rpc("anvil_dumpState", False)  # without past blocks' states, as pruned
        pending = self.rpc("txpool_status")
        self.lost_mempool += int(pending.get("pending", "0x0"), 16)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        state = json.loads(gzip.decompress(bytes.fromhex(dump.removeprefix("0x"))))
        self._state = self.workdir / f"anvil-state-{self.starts}.json"
        self._state.write_text(json.dumps(state))

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
