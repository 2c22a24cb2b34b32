"""The compiled stablecoin contract, loaded from the committed artifacts (no compiler needed).

``solidity/build/<Name>.json`` is written by :mod:`gateway.stablecoin.compile`; a test checks it
matches the sources. Besides the ABI and bytecode, this module knows the contract's custom errors
by selector, so the chain client can name the error a reverted call raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from gateway.errors import NotFound

BUILD_DIR = Path(__file__).resolve().parents[2] / "solidity" / "build"
STABLECOIN = "DTStablecoin"

DECIMALS = 2
"""1 token unit = 1 tiyn; 1 KZT = 100 tiyn = 100 units."""

ATTESTATION_TYPE = (
    "ReserveAttestation(uint256 reserve,uint256 sequence,uint256 timestamp,bytes32 walletRefHash,"
    "uint256 logSize,bytes32 logRoot)"
)
"""The EIP-712 type an attestor signs; the domain is the token's (name, version "1")."""
EMPTY_LOG_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
"""RFC 9162 root of the empty tree (SHA-256 of no bytes): the contract's log anchor before the
first attestation."""
EIP712_VERSION = "1"

MINTER_ROLE = keccak(text="MINTER_ROLE")
PAUSER_ROLE = keccak(text="PAUSER_ROLE")
BLOCKLISTER_ROLE = keccak(text="BLOCKLISTER_ROLE")
ATTESTOR_ROLE = keccak(text="ATTESTOR_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32


class ArtifactMissing(NotFound):
    code = "ARTIFACT_MISSING"
    title = "Compiled contract artifact not found"


def _canonical_type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True)
class CustomError:
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"

    @property
    def selector(self) -> bytes:
        return keccak(text=self.signature)[:4]


@dataclass(frozen=True)
class DecodedRevert:
    """A revert decoded against the ABI: a custom error, ``Error(string)`` or ``Panic(uint256)``."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.name}({inner})"


_ERROR_STRING = keccak(text="Error(string)")[:4]
_PANIC = keccak(text="Panic(uint256)")[:4]


@dataclass(frozen=True, eq=False)
class ContractArtifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    source_hash: str
    compiler_version: str
    evm_version: str
    optimizer_runs: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @cached_property
    def errors(self) -> dict[bytes, CustomError]:
        """Custom errors by 4-byte selector."""
        found: dict[bytes, CustomError] = {}
        for item in self.abi:
            if item.get("type") != "error":
                continue
            error = CustomError(
                name=str(item["name"]),
                types=tuple(_canonical_type(p) for p in item["inputs"]),
                names=tuple(str(p["name"]) or f"arg{i}" for i, p in enumerate(item["inputs"])),
            )
            found[error.selector] = error
        return found

    def decode_revert(self, data: bytes) -> DecodedRevert | None:
        """Name the revert in ``data`` (the returned bytes of a failed call), if known."""
        selector, payload = data[:4], data[4:]
        try:
            if selector == _ERROR_STRING:
                (message,) = abi_decode(["string"], payload)
                return DecodedRevert("Error", {"message": message})
            if selector == _PANIC:
                (panic_code,) = abi_decode(["uint256"], payload)
                return DecodedRevert("Panic", {"code": panic_code})
            error = self.errors.get(selector)
            if error is None:
                return None
            values = abi_decode(list(error.types), payload)
        except Exception:  # malformed revert data: report it as unknown
            return None
        return DecodedRevert(error.name, dict(zip(error.names, values, strict=True)))


def _hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def parse_artifact(raw: dict[str, Any]) -> ContractArtifact:
    return ContractArtifact(
        name=str(raw["contractName"]),
        abi=list(raw["abi"]),
        bytecode=_hex_bytes(raw["bytecode"]),
        deployed_bytecode=_hex_bytes(raw["deployedBytecode"]),
        source_hash=str(raw["sourceHash"]),
        compiler_version=str(raw["compiler"]["version"]),
        evm_version=str(raw["compiler"]["evmVersion"]),
        optimizer_runs=int(raw["compiler"]["optimizer"]["runs"]),
        raw=raw,
    )


def load_artifact(name: str = STABLECOIN, build_dir: Path | None = None) -> ContractArtifact:
    """Load ``<build_dir>/<name>.json`` (default: the repository's ``solidity/build``)."""
    path = (build_dir or BUILD_DIR) / f"{name}.json"
    if build_dir is None:
        return _load_default(path)
    return _load(path)


@cache
def _load_default(path: Path) -> ContractArtifact:
    return _load(path)


def _load(path: Path) -> ContractArtifact:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactMissing(
            f"{path} not found: run python -m gateway.stablecoin.compile"
        ) from exc
    return parse_artifact(raw)


__all__ = [
    "ATTESTATION_TYPE",
    "ATTESTOR_ROLE",
    "BLOCKLISTER_ROLE",
    "DECIMALS",
    "DEFAULT_ADMIN_ROLE",
    "EIP712_VERSION",
    "MINTER_ROLE",
    "PAUSER_ROLE",
    "STABLECOIN",
    "ArtifactMissing",
    "ContractArtifact",
    "CustomError",
    "DecodedRevert",
    "load_artifact",
    "parse_artifact",
]
