"""The log core is part of the public verifier: it must stay readable and runnable alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import gateway.collateral

ALLOWED = {
    "tlog.py": set(),
    "note.py": {"cryptography"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_verifier_core_imports_only_the_standard_library_and_its_allowed_packages(
    module: str,
) -> None:
    path = Path(gateway.collateral.__file__).parent / module
    for name in _imports(path):
        top = name.split(".")[0]
        assert (
            top in sys.stdlib_module_names
            or top in ALLOWED[module]
            or name in {"gateway.collateral.tlog", "gateway.collateral.note"}
        ), f"{module} imports {name}"
