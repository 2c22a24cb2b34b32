"""Batched mode (``gateway.connector.batches``) on an in-memory repository: legs and decisions
wait to be grouped into one message per network, sent once ``batch_max`` wait or the oldest
waited ``batch_linger_ms``; what is sent is marked so (legs instructed under the batch's
message id, decisions no longer queued)."""

from __future__ import annotations

import pytest

from gateway.connector import batches
from gateway.connector.messages import PACS002, PACS009
from gateway.connector.model import DecisionKind, LegStatus
from gateway.connector.rows import PvPRow
from gateway.iso20022 import Pacs002, Pacs009
from tests.unit.connector.fakes import DT_NETWORK, FX_NETWORK, MARGIN_MS, World

FAR = 10 * MARGIN_MS
LINGER_MS = 3_600_000
"""A linger no test waits out: a batch goes only when full, forced, or made old on purpose."""


@pytest.fixture
def world() -> World:
    return World.make(batch_max=2, batch_linger_ms=LINGER_MS)


def _flush(world: World, *, force: bool = False) -> tuple[int, bool]:
    work = world.work()
    made = batches.flush(world.handlers.cfg, world.handlers, work, force=force)
    world.commit(work)
    return made


def _queued(world: World, n: int) -> list[PvPRow]:
    return [world.pvp(deadline_in_ms=FAR, status=LegStatus.QUEUED) for _ in range(n)]


def _pacs009s(world: World) -> dict[str, list[Pacs009]]:
    """The pacs.009 sent, by network."""
    sent: dict[str, list[Pacs009]] = {}
    for row in world.sent(msg_def_id=PACS009):
        msg = world.message(row)
        assert isinstance(msg, Pacs009)
        sent.setdefault(row["destination_bic"], []).append(msg)
    return sent


def test_a_full_batch_per_network_goes_and_the_rest_waits(world: World) -> None:
    first, second, third = _queued(world, 3)

    assert _flush(world) == (2, True)  # one pacs.009 per network; the third PvP's legs wait

    sent = _pacs009s(world)
    assert sent.keys() == {DT_NETWORK, FX_NETWORK}
    for network, leg_name in ((DT_NETWORK, "DT"), (FX_NETWORK, "FX")):
        [msg] = sent[network]
        assert [tx.pvp.pvp_id for tx in msg.transactions if tx.pvp] == [first.id, second.id]
        for pvp in (first, second):
            leg = world.leg(pvp, leg_name)
            assert leg.status is LegStatus.INSTRUCTED and leg.pacs009_msg_id == msg.msg_id
        assert world.leg(third, leg_name).status is LegStatus.QUEUED


def test_a_batch_not_full_goes_when_forced_or_once_its_oldest_lingered(world: World) -> None:
    [pvp] = _queued(world, 1)
    assert _flush(world) == (0, True)
    assert world.sent() == []

    world.repo.created_at[pvp.id] -= 2 * LINGER_MS  # made longer than a linger ago
    assert _flush(world) == (2, False)
    assert {leg.status for leg in world.repo.legs.values()} == {LegStatus.INSTRUCTED}

    [later] = _queued(world, 1)
    assert _flush(world, force=True) == (2, False)
    assert world.leg(later, "DT").status is LegStatus.INSTRUCTED


def test_decisions_wait_and_go_as_one_pacs002_per_network(world: World) -> None:
    pvps = _queued(world, 2)
    _flush(world)
    for pvp in pvps:
        assert world.receive(world.status(world.leg(pvp, "DT"), "ACSP"), DT_NETWORK)
        assert world.receive(world.status(world.leg(pvp, "FX"), "ACSP"), FX_NETWORK)
    assert all(world.repo.decisions[p.id].kind is DecisionKind.COMMIT for p in pvps)
    assert world.sent(msg_def_id=PACS002) == []  # decided, queued
    assert all(leg.decision_queued for leg in world.repo.legs.values())

    assert _flush(world) == (2, False)

    rows = world.sent(msg_def_id=PACS002)
    assert {r["destination_bic"] for r in rows} == {DT_NETWORK, FX_NETWORK} and len(rows) == 2
    for row in rows:
        msg = world.message(row)
        assert isinstance(msg, Pacs002)
        assert [st.status for st in msg.transactions] == ["ACSP", "ACSP"]
        fulfilments = [st.pvp.fulfilment for st in msg.transactions if st.pvp]
        assert fulfilments == [p.secret for p in pvps]
    assert not any(leg.decision_queued for leg in world.repo.legs.values())
    assert _flush(world) == (0, False)  # nothing sent twice
