"""Fixtures: the PvP gateway in process, with a fake connector (see
``tests/support/inprocess_pvp.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.support.inprocess_pvp import InProcessPvP, serve_inprocess_pvp


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[InProcessPvP]:
    pvp = {
        "grace_seconds": 0.1,
        "status_retry_seconds": 0.3,
        "last_resort_seconds": 1.0,
        "workers": 2,
        "dispatchers": 2,
    }
    with serve_inprocess_pvp(engine, tmp_path, pvp) as world:
        yield world
