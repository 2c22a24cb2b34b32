"""Compile ``solidity/src`` into the committed JSON artifacts under ``solidity/build``.

Run ``python -m gateway.stablecoin.compile`` after changing a contract (``--check`` verifies the
committed artifacts instead of writing them). The gateway itself never compiles: it loads the
artifacts with :mod:`gateway.stablecoin.contract`.

The compiler is the solc version pinned in ``ops/toolchain/package.json``: a native ``solc`` on
PATH when its version matches the pin, else the solc-js shim ``ops/toolchain/solc`` (installed by
``ops/setup-toolchain``). Every source, the OpenZeppelin ones included, is passed inline under a
machine-independent name, so the bytecode (whose metadata hashes the sources) is the same on every
machine. Compiler output is cached by the hash of the standard-JSON input, since each run of the
solc-js shim costs a couple of seconds of node start-up and compilation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import Unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "solidity" / "src"
BUILD_DIR = REPO_ROOT / "solidity" / "build"
TOOLCHAIN_DIR = REPO_ROOT / "ops" / "toolchain"
NODE_MODULES = TOOLCHAIN_DIR / "node_modules"
SOLC_SHIM = TOOLCHAIN_DIR / "solc"

CONTRACTS = ("DTStablecoin",)
"""Contracts (by name, one per file ``solidity/src/<name>.sol``) that get an artifact."""

EVM_VERSION = "cancun"
"""Pinned so that py-evm (the in-process chain) runs the same bytecode as anvil."""
OPTIMIZER_RUNS = 1_000_000
"""Optimise for cheap calls: a mint is run far more often than the contract is deployed."""

_IMPORT_RE = re.compile(r"""^\s*import\s+(?:[^"';]*?\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)


class ToolchainMissing(Unavailable):
    """No usable solc: run ``ops/setup-toolchain`` (or put the pinned native solc on PATH)."""

    code = "TOOLCHAIN_MISSING"
    title = "Solidity toolchain not installed"


class CompilationFailed(Unavailable):
    code = "COMPILATION_FAILED"
    title = "Solidity compilation failed"


@dataclass(frozen=True)
class Solc:
    path: Path
    version: str
    """``major.minor.patch+commit.hash``, without the platform suffix."""


def pinned_solc_version() -> str:
    package = json.loads((TOOLCHAIN_DIR / "package.json").read_text())
    return str(package["dependencies"]["solc"])


def pinned_openzeppelin_version() -> str:
    package = json.loads((TOOLCHAIN_DIR / "package.json").read_text())
    return str(package["dependencies"]["@openzeppelin/contracts"])


def _solc_version(binary: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"Version: (\d+\.\d+\.\d+\+commit\.[0-9a-f]+)", out)
    return match.group(1) if match else None


def find_solc() -> Solc:
    """The pinned compiler: a matching native solc on PATH, else the solc-js shim."""
    pin = pinned_solc_version()
    native = shutil.which("solc")
    if native is not None:
        version = _solc_version(Path(native))
        if version is not None and version.split("+")[0] == pin:
            return Solc(Path(native), version)
    if (NODE_MODULES / "solc").is_dir() and shutil.which("node") is not None:
        version = _solc_version(SOLC_SHIM)
        if version is not None and version.split("+")[0] == pin:
            return Solc(SOLC_SHIM, version)
    raise ToolchainMissing(f"solc {pin} not found: run ops/setup-toolchain")


def _read_source(name: str) -> str:
    if name.startswith("solidity/"):
        return (REPO_ROOT / name).read_text()
    path = NODE_MODULES / name
    if not path.is_file():
        raise ToolchainMissing(f"cannot find import {name!r}: run ops/setup-toolchain")
    return path.read_text()


def collect_sources(contracts: tuple[str, ...] = CONTRACTS) -> dict[str, str]:
    """Every source the contracts need, keyed by import name, following imports transitively."""
    pending = [f"solidity/src/{name}.sol" for name in contracts]
    sources: dict[str, str] = {}
    while pending:
        name = pending.pop()
        if name in sources:
            continue
        text = _read_source(name)
        sources[name] = text
        for target in _IMPORT_RE.findall(text):
            if target.startswith("."):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            pending.append(target)
    return dict(sorted(sources.items()))


def standard_input(sources: dict[str, str]) -> dict[str, Any]:
    wanted = [
        "abi",
        "evm.bytecode.object",
        "evm.deployedBytecode.object",
        "evm.methodIdentifiers",
        "storageLayout",
    ]
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "viaIR": False,
            "outputSelection": {
                name: {"*": wanted} for name in sources if name.startswith("solidity/")
            },
        },
    }


def input_hash(std_input: dict[str, Any]) -> str:
    canonical = json.dumps(std_input, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _cache_dir() -> Path:
    # Under node_modules: gitignored, and thrown away with the toolchain it depends on.
    return NODE_MODULES / ".cache" / "dt-gateway-solc"


def run_solc(std_input: dict[str, Any], solc: Solc, *, use_cache: bool = True) -> dict[str, Any]:
    """Compile via py-solc-x, cached by (input hash, compiler version)."""
    key = hashlib.sha256(f"{input_hash(std_input)}:{solc.version}".encode()).hexdigest()
    cached = _cache_dir() / f"{key}.json"
    if use_cache and cached.is_file():
        result: dict[str, Any] = json.loads(cached.read_text())
        return result

    import solcx  # deferred: only compilation needs it
    from solcx.exceptions import SolcError

    try:
        output: dict[str, Any] = solcx.compile_standard(std_input, solc_binary=solc.path)
    except SolcError as exc:
        raise CompilationFailed(str(exc)) from exc
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(output))
        os.replace(tmp, cached)
    return output


def build_artifacts(*, use_cache: bool = True) -> dict[str, dict[str, Any]]:
    """Compile and return ``{contract name: artifact dict}`` (what goes into solidity/build)."""
    solc = find_solc()
    sources = collect_sources()
    std_input = standard_input(sources)
    output = run_solc(std_input, solc, use_cache=use_cache)
    source_hash = input_hash(std_input)
    artifacts: dict[str, dict[str, Any]] = {}
    for name in CONTRACTS:
        source_name = f"solidity/src/{name}.sol"
        compiled = output["contracts"][source_name][name]
        layout = [
            {
                "label": item["label"],
                "slot": int(item["slot"]),
                "offset": item["offset"],
                "contract": item["contract"],
            }
            for item in compiled["storageLayout"]["storage"]
        ]
        artifacts[name] = {
            "contractName": name,
            "sourceName": source_name,
            "sourceHash": source_hash,
            "sourceHashAlgorithm": "sha256 of the canonical standard-JSON compiler input",
            "compiler": {
                "version": solc.version,
                "evmVersion": EVM_VERSION,
                "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
                "viaIR": False,
            },
            "openzeppelin": pinned_openzeppelin_version(),
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "methodIdentifiers": compiled["evm"]["methodIdentifiers"],
            "storageLayout": layout,
        }
    return artifacts


def artifact_path(name: str) -> Path:
    return BUILD_DIR / f"{name}.json"


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def write_artifacts(*, use_cache: bool = True) -> list[Path]:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in build_artifacts(use_cache=use_cache).items():
        path = artifact_path(name)
        path.write_text(render(artifact))
        written.append(path)
    return written


def stale_artifacts(*, use_cache: bool = True) -> list[str]:
    """Names of contracts whose committed artifact differs from a fresh compilation."""
    stale = []
    for name, artifact in build_artifacts(use_cache=use_cache).items():
        path = artifact_path(name)
        if not path.is_file() or path.read_text() != render(artifact):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.stablecoin.compile", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="verify, do not write")
    parser.add_argument("--no-cache", action="store_true", help="always run the compiler")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_artifacts(use_cache=not args.no_cache)
            for name in stale:
                print(f"stale: {artifact_path(name)} (run python -m gateway.stablecoin.compile)")
            return 1 if stale else 0
        for path in write_artifacts(use_cache=not args.no_cache):
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    except (ToolchainMissing, CompilationFailed) as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
