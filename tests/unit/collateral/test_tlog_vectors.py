"""The transparency-dev RFC 9162 proof vectors get the verdict their ``wantErr`` field states."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.collateral.tlog import (
    EMPTY_ROOT,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parents[3].parent / "shared" / "tlog-vectors"
FILES = sorted(VECTORS.rglob("*.json")) if VECTORS.is_dir() else []


@pytest.fixture
def vectors() -> Path:
    """The vector directory sits beside the repository; in CI its absence is a failure."""
    if not VECTORS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"proof vectors are required in CI and missing at {VECTORS}")
        pytest.skip(f"proof vectors not found at {VECTORS}")
    return VECTORS


def _b64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def _verdict(vector: dict[str, Any]) -> bool:
    """True if the vector verifies, False if it is refused with a ProofError."""
    proof = [_b64(h) for h in vector["proof"] or []]
    try:
        if "leafIdx" in vector:
            verify_inclusion(
                vector["leafIdx"],
                vector["treeSize"],
                _b64(vector["leafHash"]),
                proof,
                _b64(vector["root"]),
            )
        else:
            root1, root2 = _b64(vector["root1"]), _b64(vector["root2"])
            verify_consistency(vector["size1"], vector["size2"], proof, root1, root2)
    except ProofError:
        return False
    return True


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(VECTORS)))
def test_vector_gets_the_verdict_it_states(vectors: Path, path: Path) -> None:
    vector = json.loads(path.read_text())
    assert _verdict(vector) is not vector["wantErr"], vector["desc"]


def test_twelve_vectors_verify_and_184_are_refused(vectors: Path) -> None:
    files = sorted(vectors.rglob("*.json"))
    verdicts = [_verdict(json.loads(path.read_text())) for path in files]
    assert (verdicts.count(True), verdicts.count(False)) == (12, 184)


def test_known_constants_match_the_vector_source() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
