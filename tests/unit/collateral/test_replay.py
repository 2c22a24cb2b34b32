"""Replaying the log's entries: each way the bookkeeping can fail to add up has its own code."""

from __future__ import annotations

import pytest

from gateway.collateral import entries as fmt
from gateway.collateral.replay import Replay
from gateway.collateral.verdict import ExitCode, Failure

TIME = "2026-12-06T14:44:30.123Z"
TO = "0x" + "e1" * 20


def dt(amount: int, balance: int, transfer_id: str = "t") -> bytes:
    return fmt.encode(fmt.DtMovement(transfer_id, "transfer", amount, balance, TIME))


def mint(block: int, amount: int, supply: int, log_index: int = 0) -> bytes:
    tx = "0x" + f"{block:064x}"
    return fmt.encode(
        fmt.ChainMint(tx, log_index, block, TO, amount, "0x" + "01" * 32, None, supply)
    )


def burn(block: int, amount: int, supply: int) -> bytes:
    tx = "0x" + f"{block:064x}"
    transfer_id = fmt.redemption_transfer_id(tx, 0)
    return fmt.encode(fmt.ChainBurn(tx, 0, block, TO, amount, "KZ-1", transfer_id, supply))


def statement(block: int, supply: int, reserve: int) -> bytes:
    return fmt.encode(fmt.Statement(block, "0x" + "ab" * 32, supply, reserve, TIME))


HONEST = [dt(1000, 1000), mint(5, 1000, 1000), statement(6, 1000, 1000), burn(7, 400, 600)]
HONEST += [dt(-400, 600), statement(8, 600, 600), dt(50, 650), mint(9, 50, 650)]


def replayed(*data: bytes) -> Replay:
    replay = Replay()
    for entry in data:
        replay.apply(entry)
    return replay


def failure(*data: bytes) -> Failure:
    with pytest.raises(Failure) as caught:
        replayed(*data)
    return caught.value


def test_an_honest_history_replays_to_its_totals() -> None:
    replay = replayed(*HONEST)
    assert (replay.size, replay.balance, replay.supply) == (8, 650, 650)
    assert replay.last_event == (9, 0)
    assert replay.last_statement is not None
    assert replay.last_statement[0] == 5


def test_each_statement_takes_the_events_since_the_previous_one() -> None:
    replay, covered = Replay(), []
    for data in HONEST:
        if isinstance(replay.apply(data), fmt.Statement):
            covered.append([i for i, _ in replay.take_pending()])
    assert covered == [[1], [3]]
    assert [i for i, _ in replay.pending] == [7]


def test_the_replay_state_round_trips_through_json() -> None:
    replay = replayed(*HONEST)
    assert Replay.from_json(replay.to_json()) == replay


def test_a_resumed_replay_continues_where_it_stopped() -> None:
    first = replayed(*HONEST[:4])
    resumed = Replay.from_json(first.to_json())
    for entry in HONEST[4:]:
        resumed.apply(entry)
    assert (resumed.balance, resumed.supply, resumed.size) == (650, 650, 8)


def test_a_malformed_entry_is_named_by_its_index() -> None:
    caught = failure(dt(1000, 1000), b'{"v":1}')
    assert caught.code == ExitCode.MALFORMED_ENTRY
    assert caught.message.startswith("entry 1: ")


def test_a_balance_that_does_not_follow_from_the_amount_fails() -> None:
    caught = failure(dt(1000, 1000), dt(500, 1400, "t2"))
    assert caught.code == ExitCode.BALANCE
    assert caught.message == (
        "entry 1 (dt transfer t2): balance expected 1500 (previous 1000 +500), found 1400"
    )


def test_a_wallet_going_below_zero_fails_the_balance() -> None:
    caught = failure(dt(100, 100), dt(-200, 0))
    assert caught.code == ExitCode.BALANCE
    assert (
        "balance expected -100 (previous 100 -200) (the wallet would go below zero)"
        in caught.message
    )


def test_a_supply_that_does_not_follow_from_the_events_fails() -> None:
    caught = failure(dt(1000, 1000), mint(5, 300, 301))
    assert caught.code == ExitCode.SUPPLY
    assert "supply expected 300 (previous 0 +300), found 301" in caught.message


def test_a_burn_must_lower_the_supply() -> None:
    caught = failure(dt(1000, 1000), mint(5, 300, 300), burn(6, 100, 300))
    assert caught.code == ExitCode.SUPPLY
    assert "supply expected 200 (previous 300 -100), found 300" in caught.message


def test_supply_above_the_balance_after_any_entry_fails() -> None:
    caught = failure(dt(1000, 1000), mint(5, 1000, 1000), dt(-1, 999))
    assert caught.code == ExitCode.ABOVE_RESERVE
    assert caught.message == (
        "after entry 2 (dt transfer t): supply 1000 is above the reserve "
        "(the segregated wallet's balance) 999"
    )


def test_a_statement_must_state_the_replayed_reserve_and_supply() -> None:
    reserve = failure(dt(1000, 1000), statement(6, 0, 900))
    assert reserve.code == ExitCode.BALANCE
    assert "reserve expected 1000 (the replayed balance), found 900" in reserve.message
    supply = failure(dt(1000, 1000), statement(6, 10, 1000))
    assert supply.code == ExitCode.SUPPLY
    assert "supply expected 0 (the replayed supply), found 10" in supply.message


def test_events_must_come_in_chain_order() -> None:
    caught = failure(dt(1000, 1000), mint(5, 10, 10, log_index=2), mint(5, 10, 20, log_index=1))
    assert caught.code == ExitCode.OUT_OF_ORDER
    assert "not after the previous event entry (block 5, log 2)" in caught.message


def test_an_event_behind_a_statement_that_covers_its_block_fails() -> None:
    caught = failure(dt(1000, 1000), statement(6, 0, 1000), mint(6, 10, 10))
    assert caught.code == ExitCode.OUT_OF_ORDER
    assert "comes after the statement at entry 1, which promised every event up to block 6" in (
        caught.message
    )


def test_a_statement_before_an_event_it_should_follow_fails() -> None:
    caught = failure(dt(1000, 1000), mint(9, 10, 10), statement(8, 10, 1000))
    assert caught.code == ExitCode.OUT_OF_ORDER
    assert "comes after an event entry of block 9" in caught.message


def test_statements_may_not_go_back_in_blocks() -> None:
    caught = failure(dt(1000, 1000), statement(8, 0, 1000), statement(7, 0, 1000))
    assert caught.code == ExitCode.OUT_OF_ORDER
    assert "before the previous statement's block 8" in caught.message


@pytest.mark.parametrize(
    "broken",
    [
        {"size": "8"},
        {"last_event": [9]},
        {"last_event": ["9", 0]},
        {"pending": [{"index": 0, "entry": dt(1, 1).decode()}]},
        {"last_statement": {"index": 0, "entry": dt(1, 1).decode()}},
        {"pending": [{"index": 0, "entry": "{}"}]},
    ],
)
def test_a_replay_state_that_is_not_one_is_refused(broken: dict[str, object]) -> None:
    data = {**replayed(*HONEST).to_json(), **broken}
    with pytest.raises((ValueError, TypeError)):
        Replay.from_json(data)
