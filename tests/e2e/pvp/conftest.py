"""Fixtures: a wired gateway + connector pair as real subprocesses (see ``harness.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pvp.harness import PvPProcesses


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., PvPProcesses]]:
    """Build and set up a world (keyword arguments go to :class:`PvPProcesses`); stopped at the
    end."""
    worlds: list[PvPProcesses] = []

    def make(**kw: Any) -> PvPProcesses:
        setup = kw.pop("setup", {})
        world = PvPProcesses(tmp_path / f"world{len(worlds)}", **kw)
        worlds.append(world)
        return world.setup(**setup)

    try:
        yield make
    finally:
        for world in worlds:
            world.close()


@pytest.fixture
def world(make_world: Callable[..., PvPProcesses]) -> PvPProcesses:
    return make_world()
