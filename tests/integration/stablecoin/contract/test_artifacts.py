"""The committed artifacts match the sources, and the toolchain answers as pinned."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from gateway.stablecoin import compile as solc_build
from gateway.stablecoin.contract import load_artifact


def _need_toolchain() -> solc_build.Solc:
    try:
        return solc_build.find_solc()
    except solc_build.ToolchainMissing:
        if os.environ.get("CI"):
            raise
        pytest.skip("solc is missing: run ops/setup-toolchain")


def test_solc_shim_answers_version_in_native_format() -> None:
    if not (solc_build.NODE_MODULES / "solc").is_dir():
        _need_toolchain()
        pytest.skip("the solc-js shim is not installed")
    out = subprocess.run(
        [str(solc_build.SOLC_SHIM), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("solc, the solidity compiler commandline interface\n")
    assert f"Version: {solc_build.pinned_solc_version()}+commit." in out


def test_solc_shim_refuses_modes_it_does_not_implement() -> None:
    if not (solc_build.NODE_MODULES / "solc").is_dir():
        pytest.skip("the solc-js shim is not installed")
    done = subprocess.run([str(solc_build.SOLC_SHIM), "--bin", "x.sol"], capture_output=True)
    assert done.returncode != 0


def test_committed_artifacts_match_the_sources() -> None:
    """Recompile (cached by input hash) and compare byte for byte with solidity/build."""
    solc = _need_toolchain()
    fresh = solc_build.build_artifacts()
    for name, artifact in fresh.items():
        committed = json.loads(solc_build.artifact_path(name).read_text())
        assert committed["sourceHash"] == artifact["sourceHash"], (
            f"{name}: sources changed; run python -m gateway.stablecoin.compile"
        )
        assert committed == artifact, f"{name}: artifact differs from a fresh compilation"
        assert artifact["compiler"]["version"] == solc.version
        assert artifact["compiler"]["evmVersion"] == "cancun"


def test_artifact_loads_without_a_compiler() -> None:
    artifact = load_artifact()
    assert artifact.name == "DTStablecoin"
    assert len(artifact.bytecode) > len(artifact.deployed_bytecode) > 0
    assert artifact.evm_version == "cancun"
    assert artifact.compiler_version.startswith(solc_build.pinned_solc_version() + "+")
    names = {error.name for error in artifact.errors.values()}
    assert {"ReserveExceeded", "MintRequestAlreadyUsed", "AttestationStale"} <= names
