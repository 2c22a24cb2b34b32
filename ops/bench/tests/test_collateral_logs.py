"""The histories the proof-of-collateral benchmark builds (``ops/bench/collateral_logs.py``,
``ops/bench/collateral_page.py``) are valid logs: the integrator takes every pooled entry, and
the public verifier's stand-in chain answers single and batched calls."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from collateral_logs import (  # noqa: E402
    ORIGIN,
    collateral_log,
    drain,
    engine_at,
    open_wallets,
    pool_bodies,
)
from collateral_page import page_log  # noqa: E402
from collateral_serving import quiet_chain  # noqa: E402

from gateway.collateral.note import Signer  # noqa: E402


def test_pooled_movements_are_all_integrated_and_a_later_pool_continues_the_balance(
    tmp_path: Path,
) -> None:
    engine = engine_at(tmp_path / "log.db")
    try:
        open_wallets(engine, 2)
        clog = collateral_log(Signer.generate(ORIGIN), batch_limit=7)
        balance = pool_bodies(engine, 0, 30)
        assert balance == 30
        assert drain(engine, clog) == 30
        assert pool_bodies(engine, 30, 5, balance) == 35
        assert drain(engine, clog) == 5
    finally:
        engine.dispose()


def test_the_pages_history_has_three_entries_a_round_and_two_more_a_redemption(
    tmp_path: Path,
) -> None:
    engine = engine_at(tmp_path / "page.db")
    try:
        open_wallets(engine, 0)
        page_log(engine, 20)
        # A deposit, its mint and a statement each round; a burn and its payout every tenth.
        assert drain(engine, collateral_log(Signer.generate(ORIGIN))) == 20 * 3 + 2 * 2
    finally:
        engine.dispose()


def _rpc(url: str, body: object) -> object:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_the_quiet_chain_answers_one_call_or_a_batch() -> None:
    with quiet_chain() as url:
        one = _rpc(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        assert one == {"jsonrpc": "2.0", "id": 1, "result": hex(31337)}
        batch = _rpc(
            url,
            [
                {"jsonrpc": "2.0", "id": 2, "method": "eth_getLogs", "params": []},
                {"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber", "params": []},
            ],
        )
        assert batch == [
            {"jsonrpc": "2.0", "id": 2, "result": []},
            {"jsonrpc": "2.0", "id": 3, "result": hex(100)},
        ]
