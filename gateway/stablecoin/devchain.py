"""A local development chain: anvil on a free 127.0.0.1 port, else the in-process eth-tester.

Both sit behind :class:`DevChain`: a connected ``Web3``, funded dev keys, and the few test
controls both support (snapshot/revert, advancing time, mining). The embedded default of the
gateway (an empty ``StablecoinSettings.rpc_url``) runs on one of these.

anvil is looked for in ``ops/toolchain/node_modules`` (installed by ``ops/setup-toolchain``: the
native binary of ``@foundry-rs/anvil``'s platform package, or the ``.bin/anvil`` node wrapper)
and then on PATH. The dev keys are derived from anvil's well-known test mnemonic: they are public
and must never hold anything of value.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from gateway.errors import Unavailable

TOOLCHAIN_MODULES = Path(__file__).resolve().parents[2] / "ops" / "toolchain" / "node_modules"
DEV_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_CHAIN_ID = 31337
ANVIL_HARDFORK = "cancun"
"""The EVM version the contract is compiled for; also what the in-process chain runs."""

ChainKind = Literal["anvil", "eth-tester"]


class DevChainUnavailable(Unavailable):
    code = "DEVCHAIN_UNAVAILABLE"
    title = "The local development chain could not start"


def find_anvil() -> Path | None:
    """The anvil binary: the toolchain's native one, its node wrapper, or one on PATH."""
    for native in sorted(TOOLCHAIN_MODULES.glob("@foundry-rs/anvil-*/bin/anvil")):
        if native.is_file():
            return native
    wrapper = TOOLCHAIN_MODULES / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


def dev_accounts(count: int) -> list[LocalAccount]:
    """The first ``count`` accounts of the dev mnemonic (anvil's defaults)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        for i in range(count)
    ]


@dataclass
class DevChain:
    """A running local chain. Use as a context manager or call :meth:`stop`."""

    kind: ChainKind
    w3: Web3
    accounts: list[LocalAccount]
    rpc_url: str | None = None
    """The JSON-RPC URL (anvil only; the in-process chain has none)."""
    _process: subprocess.Popen[str] | None = field(default=None, repr=False)
    _tester: Any = field(default=None, repr=False)

    def __enter__(self) -> DevChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)

    def snapshot(self) -> Any:
        """An opaque id to pass to :meth:`revert` (anvil ids are single-use)."""
        if self._tester is not None:
            return self._tester.take_snapshot()
        return self.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]

    def revert(self, snapshot_id: Any) -> None:
        if self._tester is not None:
            self._tester.revert_to_snapshot(snapshot_id)
            return
        result = self.w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]
        if not result.get("result"):
            raise DevChainUnavailable(f"evm_revert({snapshot_id}) failed: {result}")

    def mine(self, blocks: int = 1) -> None:
        if self._tester is not None:
            self._tester.mine_blocks(blocks)
            return
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def advance_time(self, seconds: int) -> int:
        """Move the chain's clock forward and mine a block at the new time; returns its time."""
        latest = int(self.w3.eth.get_block("latest")["timestamp"])
        target = max(latest + seconds, latest + 1)
        if self._tester is not None:
            self._tester.time_travel(target)
        else:
            self.w3.provider.make_request("evm_mine", [target])  # type: ignore[arg-type]
        return int(self.w3.eth.get_block("latest")["timestamp"])


def start_anvil(
    *, accounts: int = 10, binary: Path | None = None, startup_timeout: float = 10.0
) -> DevChain:
    """Start anvil on a free 127.0.0.1 port (anvil picks it: no race with other processes)."""
    binary = binary or find_anvil()
    if binary is None:
        raise DevChainUnavailable("anvil not found: run ops/setup-toolchain")
    command = [
        str(binary),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--chain-id",
        str(ANVIL_CHAIN_ID),
        "--hardfork",
        ANVIL_HARDFORK,
        "--accounts",
        str(accounts),
        "--mnemonic",
        DEV_MNEMONIC,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    port = _await_listening(process, startup_timeout)
    # Keep draining anvil's output so a full pipe never blocks it.
    threading.Thread(target=_drain, args=(process,), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
    return DevChain("anvil", w3, dev_accounts(accounts), url, _process=process)


def _await_listening(process: subprocess.Popen[str], timeout: float) -> int:
    assert process.stdout is not None
    found: list[int] = []
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            match = re.search(r"Listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                found.append(int(match.group(1)))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        process.kill()
        process.wait(timeout=5)
        tail = "".join(output[-20:])
        raise DevChainUnavailable(f"anvil did not start within {timeout} s: {tail}")
    return found[0]


def _drain(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    with contextlib.suppress(ValueError, OSError):
        for _ in process.stdout:
            pass


def start_eth_tester(*, accounts: int = 10) -> DevChain:
    """The in-process py-evm chain (eth-tester), funded with the same dev keys as anvil."""
    try:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester import EthereumTesterProvider
    except ImportError as exc:  # eth-tester is a dev dependency
        raise DevChainUnavailable("eth-tester[py-evm] is not installed") from exc

    keys = dev_accounts(accounts)
    genesis_state = PyEVMBackend.generate_genesis_state(num_accounts=0)
    for account in keys:
        genesis_state[bytes.fromhex(account.address[2:])] = {
            "balance": 10_000 * 10**18,
            "nonce": 0,
            "code": b"",
            "storage": {},
        }
    tester = EthereumTester(PyEVMBackend(genesis_state=genesis_state))
    w3 = Web3(EthereumTesterProvider(tester))
    return DevChain("eth-tester", w3, keys, None, _tester=tester)


def start_devchain(prefer: ChainKind | None = None, *, accounts: int = 10) -> DevChain:
    """Start the embedded default chain: anvil when installed, else the in-process chain."""
    if prefer == "eth-tester":
        return start_eth_tester(accounts=accounts)
    if prefer == "anvil" or find_anvil() is not None:
        return start_anvil(accounts=accounts)
    return start_eth_tester(accounts=accounts)


@contextlib.contextmanager
def devchain(prefer: ChainKind | None = None, *, accounts: int = 10) -> Iterator[DevChain]:
    chain = start_devchain(prefer, accounts=accounts)
    try:
        yield chain
    finally:
        chain.stop()


def wait_for_rpc(w3: Web3, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not w3.is_connected():
        if time.monotonic() > deadline:
            raise DevChainUnavailable("the chain's JSON-RPC endpoint does not answer")
        time.sleep(0.05)


__all__ = [
    "ANVIL_CHAIN_ID",
    "DEV_MNEMONIC",
    "ChainKind",
    "DevChain",
    "DevChainUnavailable",
    "dev_accounts",
    "devchain",
    "find_anvil",
    "start_anvil",
    "start_devchain",
    "start_eth_tester",
]
