"""Who hands committed outbox rows to the lanes: the thread that committed them, right after
its commit, while the dispatcher runs; the dispatcher when it was woken by a commit that queued
rows (not at every wake-up), polls for retries, or runs batches.

Deliveries are real: the DT network is an HTTP peer on 127.0.0.1 that accepts every message,
the simulated bank is the connector's own; who handed out and delivered what is seen through
the delivery's watcher (``Delivery.watch``). When the dispatcher is woken is the engine's, on
fakes: ``tests/unit/infrastructure/test_delivery.py``."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.connector import store
from gateway.connector.keys import generate_identity
from gateway.connector.outbox import transaction
from gateway.connector.runtime import Connector
from gateway.connector.store import now_ms
from gateway.sqlite import walsync
from gateway.sqlite.fastsql import run, savepoint
from tests.integration.connector.fakenet import BIC
from tests.integration.connector.support import Env, connector_settings
from tests.support.waiting import wait_for


class _Accepts(BaseHTTPRequestHandler):
    """A DT network that accepts (202) every message and answers nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def _connector(tmp_path: Path, *, threads: bool, poll: float = 0.2) -> Iterator[Connector]:
    """A started connector (its dispatcher and sweeper running if ``threads``, the dispatcher
    looking for due rows every ``poll`` seconds) with a DT network registered. The simulated
    bank's rows go through its lane too, as they do under faults (see ``sim_inline``)."""
    connector = Connector(connector_settings(tmp_path, sim_inline=False))
    connector.delivery.engine.poll = poll
    connector.start(threads=threads)
    peer = ThreadingHTTPServer(("127.0.0.1", 0), _Accepts)
    serving = threading.Thread(target=peer.serve_forever, name="dt-network")
    serving.start()
    try:
        _key, cert = generate_identity("a DT network")
        endpoint = f"http://127.0.0.1:{peer.server_address[1]}"
        network = {"bic": BIC, "currency": "KZT", "endpoint": endpoint}
        connector.register_participant({**network, "certificate_pem": cert})
        yield connector
    finally:
        connector.stop()
        peer.shutdown()
        serving.join()
        peer.server_close()


Seen = list[tuple[str, str, Any, str]]
"""(thread, event, row, detail) of each row in what the delivery's watcher was told."""


def _watch(connector: Connector) -> Seen:
    seen: Seen = []

    def watcher(event: str, rows: Sequence[Any], detail: str) -> None:
        name = threading.current_thread().name
        seen.extend((name, event, row, detail) for row in rows)

    connector.delivery.watch(watcher)
    return seen


def _sent(seen: Seen) -> list[tuple[str, Any]]:
    """(thread, row) of each delivery that went out."""
    return [
        (who, row) for who, event, row, detail in seen if (event, detail) == ("delivered", "sent")
    ]


def _insert_trades(connector: Connector, n: int) -> list[str]:
    """``n`` trades' PvPs written in one transaction, nothing handed out: their rows' ids."""
    with transaction(connector.engine) as work:
        connector.matching.insert(
            work, [connector.matching.trade(Env.trade_body()) for _ in range(n)]
        )
    return work.sent


def test_only_commits_that_queued_rows_send_the_dispatcher_looking(tmp_path: Path) -> None:
    # No dispatcher: the flag is left for us to read.
    with _connector(tmp_path, threads=False) as connector:
        delivery = connector.delivery
        delivery.engine._due = False
        delivery.committed([])  # a delivery finished, say: nothing new to look for
        assert not delivery.engine._due

        # A trade, committed on another thread (as the HTTP handlers do): its two pacs.009.
        body = Env.trade_body()
        worker = threading.Thread(target=connector.create_trade, args=(body,))
        worker.start()
        worker.join()
        assert delivery.engine._due

        delivery.engine._due = False
        assert delivery.dispatch_due() == 2  # nothing in flight: still one prepared plan
        assert delivery.rows.ids and delivery.dispatch_due() == 0  # in flight: not again
        delivery.committed([])
        assert not delivery.engine._due


def test_deliveries_are_recorded_together_and_stay_in_flight_until_then(tmp_path: Path) -> None:
    with _connector(tmp_path, threads=False) as connector:
        connector.create_trade(Env.trade_body())
        delivery = connector.delivery
        rows, _ = delivery.rows.claim_due()  # in flight, as handed to the lanes, which report:
        assert len(rows) == 2
        delivery.engine.report([(row, "sent") for row in rows])

        # Just delivered: not recorded yet (no dispatcher: the reporter records once due)...
        due = {"now": now_ms(), "busy": [0], "limit": 10}
        with store.reader(connector.engine) as conn:
            assert [r.id for r in run(conn, store.SELECT_DUE_OUTBOX, due)] == [r.id for r in rows]
        assert delivery.rows.ids == {r.id for r in rows}  # ...so not handed out again
        assert delivery.dispatch_due() == 0

        delivery.engine.record(force=True)  # the next poll, or once 50 ms have passed
        with store.reader(connector.engine) as conn:
            assert run(conn, store.SELECT_DUE_OUTBOX, due).all() == []
        assert not delivery.rows.ids


def test_a_thread_that_committed_rows_hands_them_out_itself(tmp_path: Path) -> None:
    # The dispatcher runs, but does not poll while the test does: a poll that came between the
    # worker's commit and its hand-out (a slow fsync) would claim the rows first, rightly.
    with _connector(tmp_path, threads=True, poll=3600) as connector:
        seen = _watch(connector)
        worker = threading.Thread(
            target=connector.create_trade, args=(Env.trade_body(),), name="trade-worker"
        )
        worker.start()
        worker.join()
        # Both pacs.009 went to their lanes from the committing thread, before it returned.
        handed_out = [(who, detail) for who, event, _, detail in seen if event == "handed_out"]
        assert handed_out == [("trade-worker", "lanes")] * 2


def test_a_thread_hands_out_its_own_rows_without_waiting_for_another_writers_fsync(
    tmp_path: Path,
) -> None:
    """After its commit (durable by then), a thread looks up the rows it wrote by their
    message ids: that read need not wait for the fsync of another writer between its COMMIT
    and its fsync, which a look for every due row must (it could see that writer's rows)."""
    with _connector(tmp_path, threads=False) as connector:
        mine = _insert_trades(connector, 1)
        assert len(mine) == 2  # the pair's message ids, for this thread to hand out
        _insert_trades(connector, 1)  # another PvP's pair: another thread's, say
        other_writer = walsync.group_sync(connector.engine)  # ...between COMMIT and fsync
        assert other_writer is not None
        other_writer.before_commit()
        try:
            synced = other_writer.fsyncs  # the engine's fsyncs so far
            kept: list[Any] = []
            assert connector.delivery.dispatch_due(kept, msg_ids=mine) == 2
            assert sorted(r.msg_id for r in kept) == sorted(mine)
            assert other_writer.fsyncs == synced
            # Every due row (the other pair) waits for an fsync that covers that writer.
            assert connector.delivery.dispatch_due() == 2
            assert other_writer.fsyncs == synced + 1
        finally:
            other_writer.committed()


def test_rows_rolled_back_with_their_savepoint_are_not_handed_out(tmp_path: Path) -> None:
    with _connector(tmp_path, threads=True) as connector:
        seen = _watch(connector)
        matching = connector.matching
        with transaction(connector.engine) as work:
            with contextlib.suppress(RuntimeError), savepoint(work.conn):
                matching.insert(work, [matching.trade(Env.trade_body())])
                raise RuntimeError("this PvP is refused")
            refused = list(work.sent)
            matching.insert(work, [matching.trade(Env.trade_body())])
            kept = work.sent[len(refused) :]
        connector.delivery.committed(work.sent)
        # Handed out on this thread before committed() returned: the two rows kept, alone.
        handed_out = [row.msg_id for _, event, row, _ in seen if event == "handed_out"]
        assert len(refused) == 2 and sorted(handed_out) == sorted(kept)
        wait_for(lambda: len(_sent(seen)) >= 2, lambda: f"two deliveries sent; seen {seen}")
        assert sorted(row.msg_id for _, row in _sent(seen)) == sorted(kept)


def test_after_answering_a_reception_thread_delivers_a_pair_itself(tmp_path: Path) -> None:
    with _connector(tmp_path, threads=True) as connector:  # the dispatcher runs
        seen = _watch(connector)

        def reception() -> None:
            # What a reception's transaction does when it decides: two rows, one per network
            # (here a trade's pacs.009s), committed without handing them out yet...
            answered = connector.handle_requests(
                [functools.partial(connector.create_trade, Env.trade_body())]
            )
            assert answered.then is not None
            answered.then(True)  # ...then, its answers sent, it delivers them

        worker = threading.Thread(target=reception, name="reception")
        worker.start()
        worker.join()
        # On that thread, the remote network first (a post waits), the simulated bank after.
        delivered = [(who, row.destination_bic) for who, row in _sent(seen)]
        assert [who for who, _ in delivered[:2]] == ["reception", "reception"]
        assert delivered[0][1] == BIC and delivered[1][1] in connector.sim.by_bic


def test_a_reception_thread_that_may_not_wait_hands_its_pair_to_the_lanes(
    tmp_path: Path,
) -> None:
    """The other reception thread is posting a decision: this one must stay free for what
    the networks post meanwhile (gateway.messaging.queues.Batcher), so the lanes deliver its
    pair."""
    with _connector(tmp_path, threads=True) as connector:
        seen = _watch(connector)

        def reception() -> None:
            answered = connector.handle_requests(
                [functools.partial(connector.create_trade, Env.trade_body())]
            )
            assert answered.then is not None
            answered.then(False)

        worker = threading.Thread(target=reception, name="reception")
        worker.start()
        worker.join()
        wait_for(lambda: len(_sent(seen)) >= 2, lambda: f"two deliveries sent; seen {seen}")
        assert "reception" not in [who for who, _ in _sent(seen)]


def test_more_than_a_pair_goes_to_the_lanes(tmp_path: Path) -> None:
    with _connector(tmp_path, threads=False) as connector:
        _insert_trades(connector, 2)
        kept: list[Any] = []
        assert connector.delivery.dispatch_due(kept) == 4
        assert kept == [] and len(connector.delivery.rows.ids) == 4  # in flight, on their lanes


def test_a_request_thread_hands_out_what_its_calls_queued_only_after_answering(
    tmp_path: Path,
) -> None:
    """Trades and instructions run on the request threads (``Connector.handle_requests``):
    nothing their commits queue goes out while the callers wait for their answers; then the
    same thread delivers a new PvP's pair itself when the lanes are idle, without waking a
    lane's thread for it."""
    with _connector(tmp_path, threads=True) as connector:
        seen = _watch(connector)
        outcomes: list[Any] = []

        def requests_thread() -> None:
            def refused(_unsent: list[str]) -> None:
                raise ValueError("not a trade")

            calls = [functools.partial(connector.create_trade, Env.trade_body()), refused]
            answered = connector.handle_requests(calls)
            outcomes.extend(answered.outcomes)
            outcomes.append([who for who, *_ in seen])  # nothing handed out while answering
            assert answered.then is not None
            answered.then(True)

        worker = threading.Thread(target=requests_thread, name="connector-requests-0")
        worker.start()
        worker.join()
        created, refusal, rounds_before = outcomes
        assert created[0] == 201
        assert isinstance(refusal, ValueError)  # that caller's answer; the trade went on
        assert "connector-requests-0" not in rounds_before
        # Then the pair went out from the request thread itself: the DT network's pacs.009
        # and the simulated bank's.
        delivered = [(who, row.destination_bic) for who, row in _sent(seen)]
        assert sorted(delivered[:2]) == sorted(
            [("connector-requests-0", BIC), ("connector-requests-0", "CBAUAEAA")]
        )
