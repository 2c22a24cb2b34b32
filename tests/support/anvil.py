"""anvil, the chain node of the stablecoin tests: what a test does when it is missing."""

from __future__ import annotations

import os

import pytest


def require_anvil() -> None:
    """Skip the calling test when anvil is missing, or fail it in CI: anvil is part of every
    machine this project runs on (``ops/setup-toolchain`` installs it)."""
    from gateway.stablecoin.devchain import find_anvil

    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil is missing: run ops/setup-toolchain")
        pytest.skip("anvil is missing: run ops/setup-toolchain")
