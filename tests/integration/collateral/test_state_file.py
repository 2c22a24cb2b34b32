"""The verifier's state file: written whole or not at all, read back exactly, refused when it is
not one or belongs to another log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.collateral import note, tlog
from gateway.collateral.replay import Replay
from gateway.collateral.state import State, load, save
from gateway.collateral.verdict import ExitCode, Failure
from tests.support.collateral import ORIGIN, Chain, History, Log


def _state() -> State:
    history = History(Log(note.Signer.generate(ORIGIN)), Chain())
    history.mint(100)
    history.statement()
    history.mint(50)
    frontier, replay = tlog.Frontier(), Replay()
    for entry in history.log.entries:
        frontier.append(tlog.leaf_hash(entry))
        replay.apply(entry)
    return State(ORIGIN, frontier, replay, timestamp=1_800_000_000)


def test_a_saved_state_loads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = _state()
    save(path, state)
    loaded = load(path, ORIGIN)
    assert loaded.to_json() == state.to_json()
    assert (loaded.size, loaded.root, loaded.replay.balance) == (5, state.root, 150)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_saving_replaces_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save(path, State.empty(ORIGIN))
    save(path, _state())
    assert json.loads(path.read_text())["size"] == 5


def test_no_file_yet_is_an_empty_state(tmp_path: Path) -> None:
    state = load(tmp_path / "absent.json", ORIGIN)
    assert (state.size, state.root) == (0, tlog.EMPTY_ROOT)


def test_a_state_for_another_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save(path, _state())
    with pytest.raises(Failure) as caught:
        load(path, ORIGIN.replace("31337", "1"))
    assert caught.value.code == ExitCode.WRONG_LOG


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(root=d["root"][::-1]),
        lambda d: d.update(size=4),
        lambda d: d.update(format="something/2"),
        lambda d: d["frontier"]["hashes"].pop(),
        lambda d: d["replay"].update(size=4),
        lambda d: d.pop("replay"),
    ],
)
def test_a_damaged_state_file_is_refused(tmp_path: Path, damage: object) -> None:
    path = tmp_path / "state.json"
    data = _state().to_json()
    damage(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    with pytest.raises(Failure) as caught:
        load(path, ORIGIN)
    assert caught.value.code == ExitCode.USAGE
    assert "is not a verifier state" in caught.value.message


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("size=5\n")
    with pytest.raises(Failure) as caught:
        load(path, ORIGIN)
    assert caught.value.code == ExitCode.USAGE
