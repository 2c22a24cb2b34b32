"""The connector's write transactions on PostgreSQL: one psycopg pipeline each
(``gateway.connector.pgtx``) and the repository that keeps what it locked
(``gateway.connector.pgrepo``), with the SQL repository as the oracle.

A write queued in the pipeline reports its failure later than when it ran alone: these check
that it still fails its transaction (or only its savepoint), that what the repository keeps
is what a read of the database says, and that connections go back to the pool as lent."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.connector import pgtx, schema, store
from gateway.connector.delivery import InFlight
from gateway.connector.faults import Faults
from gateway.connector.messages import PvPRef, credit_transfer
from gateway.connector.model import Decision, DecisionKind, LegStatus, PvPState
from gateway.connector.outbox import Work, logged, transaction
from gateway.connector.pgrepo import PgRepository
from gateway.connector.repository import SqlRepository
from gateway.connector.rows import LegRow, PvPRow
from gateway.connector.sim import SimulatedNetworks
from gateway.iso20022 import Pacs002, Pacs009
from gateway.pgarrays import FEW_ROWS
from gateway.sqlite.fastsql import run
from tests.integration.connector.support import Env

pytestmark = pytest.mark.postgres

PG = PgRepository()
SQL = SqlRepository()


@pytest.fixture
def engine(pg_database_factory: Callable[[], str]) -> Iterator[Engine]:
    eng = store.make_engine(pg_database_factory())
    schema.create_schema(eng)
    yield eng
    eng.dispose()


def _pvp(
    engine: Engine, pvp_id: str = "PVP1", status: LegStatus = LegStatus.INSTRUCTED
) -> tuple[PvPRow, list[LegRow]]:
    """A pending PvP with its two legs instructed (or ``status``), committed."""
    pvp = PvPRow(
        pvp_id, deadline=10**13, condition="c" * 64, secret="s" * 64, state=PvPState.PENDING
    )
    legs = [
        LegRow(
            pvp_id=pvp_id,
            leg=name,
            uetr=f"{pvp_id}-{name}",
            network_bic="NETWORKXXXX",
            currency=currency,
            amount=100,
            debtor_bic="DEBTORXXXXX",
            debtor_account="debtor",
            creditor_bic="CREDITORXXX",
            creditor_account="creditor",
            end_to_end_id=f"E2E-{name}",
            pacs009_msg_id=f"M-{name}",
            status=status,
            reason=None,
            locked_at=None,
            acknowledged=False,
            decision_sent_at=None,
            decision_queued=False,
            redeliver_at=None,
            redeliveries=0,
        )
        for name, currency in (("DT", "KZT"), ("FX", "AED"))
    ]
    with transaction(engine) as work:
        SQL.insert_pvps(work, [(pvp, 1)], legs)
    return pvp, legs


def _assert_locked(engine: Engine, pvp_id: str) -> None:
    """Another connection cannot lock the PvP's row: a transaction holds it."""
    with engine.connect() as other, pytest.raises(sa.exc.OperationalError) as waited:
        other.exec_driver_sql(f"SELECT id FROM pvps WHERE id = '{pvp_id}' FOR UPDATE NOWAIT")
    assert getattr(waited.value.orig, "sqlstate", None) == "55P03"  # lock not available


def _inbox_row(msg_id: str) -> dict[str, Any]:
    return {
        "sender_bic": "SENDERXXXXX",
        "msg_def_id": "pacs.002.001.10",
        "msg_id": msg_id,
        "sha256": "0" * 64,
        "raw": b"",
        "received_at": 1,
        "processed": True,
    }


def _inbox_ids(engine: Engine) -> list[str]:
    with store.reader(engine) as conn:
        return sorted(r[0] for r in conn.execute(sa.text("SELECT msg_id FROM inbox")))


def _insert_twice(engine: Engine) -> None:
    with transaction(engine) as work:
        run(work.conn, store.INSERT_INBOX, _inbox_row("A"))
        run(work.conn, store.INSERT_INBOX, _inbox_row("A"))  # queued: reported at the commit


def test_a_queued_write_that_fails_fails_its_transaction(engine: Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        _insert_twice(engine)
    assert _inbox_ids(engine) == []
    with transaction(engine) as work:  # the pool's connections are fit for the next one
        run(work.conn, store.INSERT_INBOX, _inbox_row("B"))
    assert _inbox_ids(engine) == ["B"]
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        assert not driver.autocommit


@pytest.mark.parametrize("reported", ["by_a_read_in_the_block", "after_the_block"])
def test_a_savepoint_undoes_a_failed_queued_write_and_the_transaction_goes_on(
    engine: Engine, reported: str
) -> None:
    def block(work: Work) -> None:
        with transaction(engine, work):
            run(work.conn, store.INSERT_INBOX, _inbox_row("A"))
            if reported == "by_a_read_in_the_block":
                SQL.inbox_sha(work, "SENDERXXXXX", "pacs.002.001.10", "A")
            raise RuntimeError("the block fails before its failed write is reported")

    with transaction(engine) as work:
        run(work.conn, store.INSERT_INBOX, _inbox_row("A"))
        with pytest.raises((sa.exc.IntegrityError, RuntimeError)):
            block(work)
        run(work.conn, store.INSERT_INBOX, _inbox_row("B"))
    assert _inbox_ids(engine) == ["A", "B"]


def test_the_repository_keeps_what_a_read_of_the_database_says(engine: Engine) -> None:
    pvp, legs = _pvp(engine)
    with transaction(engine) as work:
        PG.expect(work, [legs[1].uetr])
        found = PG.find_leg(work, legs[1].uetr)
        assert found == SQL.find_leg(work, legs[1].uetr)
        PG.update_leg(work, legs[0], status=LegStatus.LOCKED, locked_at=5)
        PG.update_leg(work, legs[1], status=LegStatus.LOCKED, locked_at=6)
        decision = Decision(pvp.id, DecisionKind.COMMIT, None, "both legs locked in time", 7)
        PG.insert_decision(work, decision)
        PG.update_pvp(work, pvp.id, PvPState.COMMITTED)
        updates = [{"k_pvp": pvp.id, "k_leg": leg.leg, "decision_sent_at": 8} for leg in legs]
        PG.update_legs(work, updates)
        for leg in legs:
            PG.update_leg(work, leg, status=LegStatus.SETTLED, acknowledged=True)
        PG.complete(work, pvp.id)
        assert PG.read_pvp(work, pvp.id) == SQL.read_pvp(work, pvp.id)
        assert PG.read_pvp(work, pvp.id).state is PvPState.SETTLED
        assert PG.read_legs(work, pvp.id) == SQL.read_legs(work, pvp.id)
        assert PG.read_leg(work, pvp.id, "DT") == SQL.read_leg(work, pvp.id, "DT")
        assert PG.read_decision(work, pvp.id) == SQL.read_decision(work, pvp.id) == decision
        assert PG.find_leg(work, legs[0].uetr) == SQL.find_leg(work, legs[0].uetr)


def test_a_pvp_the_transaction_inserted_is_known_without_a_read(engine: Engine) -> None:
    _pvp_before, legs = _pvp(engine, "PVP0")  # committed before: read from the database
    fresh = PvPRow("PVP2", 10**13, "c" * 64, "s" * 64, PvPState.PENDING)
    fresh_legs = [replace(leg, pvp_id=fresh.id, uetr=f"{fresh.id}-{leg.leg}") for leg in legs]
    with transaction(engine) as work:
        PG.insert_pvps(work, [(fresh, 2)], fresh_legs)
        found = PG.find_leg(work, fresh_legs[0].uetr)
        assert found is not None and found.pvp == fresh and found.decision is None
        assert PG.read_legs(work, fresh.id) == SQL.read_legs(work, fresh.id) == fresh_legs
        assert PG.find_leg(work, "no such UETR") is None
        assert PG.find_leg(work, legs[0].uetr) == SQL.find_leg(work, legs[0].uetr)


def test_a_savepoint_rolled_back_forgets_what_the_repository_kept(engine: Engine) -> None:
    pvp, legs = _pvp(engine)

    def locked_then_refused(work: Work) -> None:
        with transaction(engine, work):
            PG.update_leg(work, legs[0], status=LegStatus.LOCKED, locked_at=5)
            assert PG.read_leg(work, pvp.id, "DT").status is LegStatus.LOCKED
            raise RuntimeError("refused")

    with transaction(engine) as work:
        assert PG.find_leg(work, legs[0].uetr) is not None
        with pytest.raises(RuntimeError):
            locked_then_refused(work)
        found = PG.find_leg(work, legs[0].uetr)
        assert found is not None and found.leg == legs[0]
        assert found == SQL.find_leg(work, legs[0].uetr)


def test_the_legs_a_message_names_are_read_with_their_pvps_locked(engine: Engine) -> None:
    pvp, legs = _pvp(engine)
    with transaction(engine) as work:
        PG.expect(work, [legs[0].uetr])
        assert PG.find_leg(work, legs[0].uetr) is not None
        _assert_locked(engine, pvp.id)


def test_a_messages_duplicate_check_comes_with_the_legs_it_names(engine: Engine) -> None:
    """``expect`` with the message received: its check is the read's last column, and says
    what the check alone says (a message seen, one held back in the transaction, one never
    seen, one naming no leg) with the legs read as without it."""
    _pvp_seen, legs = _pvp(engine)
    _pvp_new, new_legs = _pvp(engine, "PVP2")
    with transaction(engine) as work:
        PG.insert_inbox(work, _inbox_row("SEEN"))
    key = ("SENDERXXXXX", "pacs.002.001.10")
    with transaction(engine) as work:
        PG.insert_inbox(work, {**_inbox_row("HELD"), "sha256": "1" * 64})  # held back
        for msg_id, uetr, sha in (
            ("SEEN", legs[0].uetr, "0" * 64),
            ("HELD", new_legs[1].uetr, "1" * 64),
            ("NEW", "no such UETR", None),
        ):
            PG.expect(work, [uetr], (*key, msg_id))
            assert PG.inbox_sha(work, *key, msg_id) == SQL.inbox_sha(work, *key, msg_id) == sha
        assert PG.find_leg(work, legs[0].uetr) == SQL.find_leg(work, legs[0].uetr)
        assert PG.find_leg(work, new_legs[1].uetr) == SQL.find_leg(work, new_legs[1].uetr)
        assert PG.find_leg(work, "no such UETR") is None
        _assert_locked(engine, "PVP1")
        _assert_locked(engine, "PVP2")
    with transaction(engine) as work:  # legs known already: the check is asked alone
        PG.expect(work, [legs[1].uetr])
        PG.expect(work, [legs[1].uetr], (*key, "SEEN"))
        assert PG.inbox_sha(work, *key, "SEEN") == "0" * 64
        assert PG.inbox_sha(work, *key, "NEW") is None


def test_queued_legs_come_with_their_pvps_locked_and_known(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batched flush's read: the PvPs locked in one round trip, so that the simulated
    bank's answer in the same transaction reads nothing, and a leg that left the queue
    between the read and the lock (its PvP aborted meanwhile) is not sent."""
    kept, kept_legs = _pvp(engine, "PVPQ1", LegStatus.QUEUED)
    gone, _gone_legs = _pvp(engine, "PVPQ2", LegStatus.QUEUED)
    with transaction(engine) as work:
        stale = SQL.queued_legs(work, 10)
    assert {q.pvp.id for q in stale} == {kept.id, gone.id}
    with engine.begin() as conn:  # another transaction aborts one of them
        conn.exec_driver_sql(f"UPDATE pvps SET state = 'aborted' WHERE id = '{gone.id}'")
        conn.exec_driver_sql(f"UPDATE legs SET status = 'released' WHERE pvp_id = '{gone.id}'")
    monkeypatch.setattr(SqlRepository, "queued_legs", lambda self, work, limit: stale)
    with transaction(engine) as work:
        fresh = PG.queued_legs(work, 10)
        assert [(q.pvp, q.leg) for q in fresh] == [(kept, leg) for leg in kept_legs]
        _assert_locked(engine, kept.id)
        tx = pgtx.tx_of(work.conn)
        assert tx is not None and tx.state is not None
        assert not tx.state.loading
        assert PG.find_leg(work, kept_legs[1].uetr) == SQL.find_leg(work, kept_legs[1].uetr)
        PG.expect(work, [leg.uetr for leg in kept_legs])
        assert not tx.state.loading  # known: nothing more to read


def test_queued_decisions_come_with_their_pvps_locked(engine: Engine) -> None:
    pvp, legs = _pvp(engine, "PVPD1")
    with transaction(engine) as work:
        SQL.insert_decision(work, Decision(pvp.id, DecisionKind.COMMIT, None, "locked", 7))
        SQL.update_pvp(work, pvp.id, PvPState.COMMITTED)
        SQL.update_legs(
            work, [{"k_pvp": pvp.id, "k_leg": leg.leg, "decision_queued": True} for leg in legs]
        )
    with transaction(engine) as work:
        queued = PG.queued_decisions(work, 10)
        assert [(q.pvp.id, q.leg.leg, q.decision) for q in queued] == [
            (pvp.id, "DT", DecisionKind.COMMIT),
            (pvp.id, "FX", DecisionKind.COMMIT),
        ]
        assert [q.leg for q in queued] == SQL.read_legs(work, pvp.id)
        _assert_locked(engine, pvp.id)


def test_a_reader_runs_in_autocommit_mode_and_gives_its_connection_back_as_lent(
    engine: Engine,
) -> None:
    with store.reader(engine) as conn:
        assert conn.connection.driver_connection.autocommit  # type: ignore[union-attr]
        assert store.pvp_exists(conn, "none") is False
    with engine.connect() as conn:
        assert not conn.connection.driver_connection.autocommit  # type: ignore[union-attr]


# --- writes held back until a read or the commit (``gateway.connector.pgwrites``) -----------


def test_a_pvp_inserted_and_changed_in_one_transaction_is_stored_as_last_written(
    engine: Engine,
) -> None:
    pvp = PvPRow("PVP3", 10**13, "c" * 64, "s" * 64, PvPState.PENDING)
    _before, legs = _pvp(engine, "PVP0")
    fresh = [replace(leg, pvp_id=pvp.id, uetr=f"{pvp.id}-{leg.leg}") for leg in legs]
    decision = Decision(pvp.id, DecisionKind.COMMIT, None, "both legs locked in time", 7)
    with transaction(engine) as work:
        PG.insert_pvps(work, [(pvp, 2)], fresh)
        for leg in fresh:
            PG.update_leg(work, leg, status=LegStatus.LOCKED, locked_at=5)
        PG.insert_decision(work, decision)
        PG.update_pvp(work, pvp.id, PvPState.COMMITTED)
        for leg in fresh:
            PG.update_leg(work, leg, status=LegStatus.SETTLED, acknowledged=True)
        PG.complete(work, pvp.id)
        # The legs of a PvP stored before: only the columns set are written.
        PG.update_leg(work, legs[0], decision_sent_at=9)
    with transaction(engine) as work:
        assert SQL.read_pvp(work, pvp.id).state is PvPState.SETTLED
        assert SQL.read_decision(work, pvp.id) == decision
        assert [
            (leg.status, leg.locked_at, leg.acknowledged) for leg in SQL.read_legs(work, pvp.id)
        ] == [(LegStatus.SETTLED, 5, True)] * 2
        assert SQL.read_leg(work, "PVP0", legs[0].leg) == replace(legs[0], decision_sent_at=9)


def test_a_read_in_the_transaction_sees_the_writes_held_back(engine: Engine) -> None:
    pvp, legs = _pvp(engine)
    with transaction(engine) as work:
        PG.update_leg(work, legs[0], status=LegStatus.LOCKED, locked_at=5)
        PG.insert_inbox(work, _inbox_row("A"))
        assert SQL.read_leg(work, pvp.id, legs[0].leg).status is LegStatus.LOCKED
        assert PG.inbox_sha(work, "SENDERXXXXX", "pacs.002.001.10", "A") == "0" * 64
        assert _inbox_ids(engine) == []  # not committed: another connection sees nothing
    assert _inbox_ids(engine) == ["A"]


def test_a_savepoint_rolled_back_forgets_the_writes_it_held(engine: Engine) -> None:
    pvp, legs = _pvp(engine)

    def refused(work: Work) -> None:
        with transaction(engine, work):
            PG.insert_inbox(work, _inbox_row("B"))
            PG.update_leg(work, legs[0], status=LegStatus.REJECTED, reason="AM04")
            # What was held before the savepoint and is sent inside it is undone with it,
            # and sent again after.
            SQL.read_legs(work, pvp.id)
            raise RuntimeError("refused")

    with transaction(engine) as work:
        PG.insert_inbox(work, _inbox_row("A"))
        PG.update_leg(work, legs[1], locked_at=4)
        with pytest.raises(RuntimeError):
            refused(work)
        PG.insert_inbox(work, _inbox_row("C"))
    assert _inbox_ids(engine) == ["A", "C"]
    with store.reader(engine) as conn:
        assert store.read_legs(conn, pvp.id) == [legs[0], replace(legs[1], locked_at=4)]


def test_a_held_write_that_fails_fails_its_transaction(engine: Engine) -> None:
    def held_twice() -> None:
        with transaction(engine) as work:
            PG.insert_inbox(work, _inbox_row("A"))
            PG.insert_inbox(work, _inbox_row("A"))  # held: sent with the first, at the commit

    with pytest.raises(sa.exc.IntegrityError):
        held_twice()
    assert _inbox_ids(engine) == []


def test_the_message_log_keeps_its_order_with_bodies_stored_once(engine: Engine) -> None:
    _pvp(engine, "PVP1")
    _pvp(engine, "PVP2")
    entries = [
        logged(["PVP1"], "out", "NETWORKXXXX", "pacs.009.001.08", "M1", b"<one/>", at=1),
        logged(["PVP1", "PVP2"], "in", "NETWORKXXXX", "pacs.002.001.10", "M2", b"<two/>", at=2),
        logged(["PVP2"], "out", "NETWORKXXXX", "pacs.002.001.10", "M3", b"<three/>", at=3),
        logged(["PVP1", "PVP2"], "out", "NETWORKXXXX", "camt.056.001.08", "M4", b"<four/>", at=4),
    ]
    with transaction(engine) as work:
        work.log.extend(entries)
    with store.reader(engine) as conn:
        one = store.read_message_log(conn, "PVP1")
        two = store.read_message_log(conn, "PVP2")
        bodies = conn.execute(sa.text("SELECT count(*) FROM message_bodies")).scalar_one()
    assert [(m.msg_id, m.raw) for m in one] == [
        ("M1", b"<one/>"),
        ("M2", b"<two/>"),
        ("M4", b"<four/>"),
    ]
    assert [(m.msg_id, m.raw) for m in two] == [
        ("M2", b"<two/>"),
        ("M3", b"<three/>"),
        ("M4", b"<four/>"),
    ]
    assert bodies == 2
    assert one[1].body_id == two[0].body_id != one[2].body_id


@pytest.mark.parametrize("n", [1, 2, FEW_ROWS // 2 + 1, FEW_ROWS + 1])
def test_a_flush_stores_the_same_rows_as_values_or_as_arrays(engine: Engine, n: int) -> None:
    """Up to FEW_ROWS rows a part of the flush sends them as rows of parameters, beyond as
    arrays (the legs' parts have two rows a PvP): the stored rows are the oracle's."""
    made = [_pvp(engine, f"OLD{i}") for i in range(n)]
    fresh = [
        (
            PvPRow(f"NEW{i}", 10**13, "c" * 64, "s" * 64, PvPState.PENDING),
            [replace(leg, pvp_id=f"NEW{i}", uetr=f"NEW{i}-{leg.leg}") for leg in legs],
        )
        for i, (_pvp_row, legs) in enumerate(made)
    ]
    with transaction(engine) as work:
        PG.insert_pvps(work, [(p, 2) for p, _ in fresh], [leg for _, ls in fresh for leg in ls])
        for pvp, legs in made:
            for leg in legs:
                PG.update_leg(work, leg, status=LegStatus.LOCKED, locked_at=5)
            PG.insert_decision(work, Decision(pvp.id, DecisionKind.COMMIT, None, "in time", 7))
            PG.update_pvp(work, pvp.id, PvPState.COMMITTED)
            PG.insert_inbox(work, _inbox_row(f"IN-{pvp.id}"))
            work.log.append(
                logged([pvp.id], "out", "NETWORKXXXX", "pacs.009.001.08", "M", b"<a/>", 1)
            )
        ids = [pvp.id for pvp, _ in made]
        work.log.append(logged(ids, "in", "NETWORKXXXX", "pacs.002.001.10", "B", b"<b/>", at=2))
    with transaction(engine) as work:
        for pvp, legs in made:
            assert SQL.read_pvp(work, pvp.id).state is PvPState.COMMITTED
            assert SQL.read_decision(work, pvp.id) == Decision(
                pvp.id, DecisionKind.COMMIT, None, "in time", 7
            )
            assert SQL.read_legs(work, pvp.id) == [
                replace(leg, status=LegStatus.LOCKED, locked_at=5) for leg in legs
            ]
        for pvp, legs in fresh:
            assert SQL.read_pvp(work, pvp.id) == pvp
            assert SQL.read_legs(work, pvp.id) == legs
    assert _inbox_ids(engine) == sorted(f"IN-{pvp.id}" for pvp, _ in made)
    with store.reader(engine) as conn:
        for pvp, _ in made:
            log = store.read_message_log(conn, pvp.id)
            assert [(m.msg_id, m.raw) for m in log] == [("M", b"<a/>"), ("B", b"<b/>")]


def test_simulated_accounts_moved_and_credited_in_one_transaction_add_up(engine: Engine) -> None:
    sim = SimulatedNetworks(
        engine, {"AED": "SIMBANKAXXX"}, connector_bic="CONNECTXXXX", faults=Faults()
    )
    sim.issue("AED", "payer", 1_000)
    with transaction(engine) as work:
        sim._move(work.conn, "AED", "payer", available=-300, held=300)
        sim._move(work.conn, "AED", "payer", held=-300)
        sim._credit(work.conn, "AED", "payee", 300)
        sim._move(work.conn, "AED", "payer", available=-50)
        sim._credit(work.conn, "AED", "payer", 50)  # moved and credited: a statement of its own
        sim.issue("AED", "payer", 0, work.conn)
    assert sim.balance("AED", "payer")["available"] == 700
    assert sim.balance("AED", "payee")["available"] == 300

    def below_zero() -> None:
        with transaction(engine) as work:
            sim._move(work.conn, "AED", "payee", available=-200, held=200)
            sim._move(work.conn, "AED", "payee", available=-200, held=200)

    with pytest.raises(sa.exc.IntegrityError):  # the store refuses it, at the commit
        below_zero()
    assert sim.balance("AED", "payee")["available"] == 300
    assert sim.check("AED")["ok"]


def _pacs009(n: int, debtor: str, amount: int) -> Pacs009:
    uetr = str(uuid.UUID(int=n, version=4))
    leg = SimpleNamespace(
        end_to_end_id=f"E2E-{n}",
        uetr=uetr,
        amount=amount,
        currency="AED",
        debtor_bic="DEBTORXXXXX",
        debtor_account=debtor,
        creditor_bic="CREDITORXXX",
        creditor_account="creditor",
        leg="FX",
    )
    tx = credit_transfer(PvPRef(f"PVP-{n}", 10**13, "c" * 64), leg)
    return Pacs009(msg_id=f"M-{n}", created=datetime.now(UTC), transactions=(tx,))


def test_a_simulated_banks_reads_see_the_moves_held_and_its_accounts_are_locked_at_the_commit(
    engine: Engine,
) -> None:
    """A message's funds check sees the moves its transaction holds back without sending
    them: the account's row stays free for other transactions until the COMMIT. An account
    that a credit held opens is sent first, so that the moves that follow find its row."""
    sim = SimulatedNetworks(
        engine, {"AED": "SIMBANKAXXX"}, connector_bic="CONNECTXXXX", faults=Faults()
    )
    sim.issue("AED", "payer", 250)

    def status(n: int, debtor: str, amount: int, work: Work) -> tuple[str, str | None]:
        ((answer, _),) = sim.handle(
            b"", "SIMBANKAXXX", work.conn, message=_pacs009(n, debtor, amount)
        )
        assert isinstance(answer, Pacs002)
        (tx,) = answer.transactions
        return tx.status, tx.reason

    with transaction(engine) as work:
        assert status(1, "payer", 100, work) == ("ACSP", None)
        assert status(2, "payer", 200, work) == ("RJCT", "AM04")  # 150 left, 100 held
        sim._move(work.conn, "AED", "payer", available=-80)  # paid to a new account, below
        assert status(3, "payer", 71, work) == ("RJCT", "AM04")  # 70 left
        with engine.connect() as other:  # nothing sent yet: no row lock held
            other.exec_driver_sql(
                "SELECT 1 FROM sim_accounts WHERE account = 'payer' FOR UPDATE NOWAIT"
            )
            other.rollback()
        sim._credit(work.conn, "AED", "newcomer", 80)
        assert status(4, "newcomer", 60, work) == ("ACSP", None)  # opened by the credit
        assert status(5, "nobody", 1, work) == ("RJCT", "AC01")
    for account, funds in (("payer", (70, 100)), ("newcomer", (20, 60))):
        balance = sim.balance("AED", account)
        assert (balance["available"], balance["held"]) == funds
    assert sim.check("AED")["ok"]


def test_a_decision_sent_again_locks_its_pvp_before_writing_its_legs(
    make_env: Callable[..., Env], pg_database_factory: Callable[[], str]
) -> None:
    env = make_env(database_url=pg_database_factory())
    pvp_id = env.trade()
    env.wait(pvp_id, lambda v: v["state"] == "settled")
    engine = env.connector.engine
    with transaction(engine) as work:
        env.connector.handlers.redeliver(work, pvp_id, "DT")  # acknowledged: nothing to send
        _assert_locked(engine, pvp_id)


# --- claims of outbox rows to deliver (``gateway.connector.delivery.InFlight``) -------------


def _outbox(engine: Engine, n: int, *, not_due: int = 0, sent: int = 0) -> None:
    """Outbox rows M1..Mn, all due but ``M<not_due>``, none sent but ``M<sent>``."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outbox (destination_bic, msg_def_id, msg_id, pvp_id, payload,"
                " created_at, available_at, attempts, sent_at)"
                " SELECT 'NETWORKXXXX', 'pacs.009.001.08', 'M' || g, NULL, '\\x00'::bytea, 1,"
                " CASE WHEN g = :not_due THEN 10 ^ 15 ELSE 1 END, 0,"
                " CASE WHEN g = :sent THEN 2 END FROM generate_series(1, :n) AS g"
            ),
            {"n": n, "not_due": not_due, "sent": sent},
        )


def test_a_claim_takes_the_oldest_due_rows_not_in_flight(engine: Engine) -> None:
    _outbox(engine, 8, not_due=3)
    rows = InFlight(engine, max_in_flight=4)
    first, more = rows.claim_due()
    assert [r.msg_id for r in first] == ["M1", "M2", "M4", "M5"] and more  # M3 not due yet
    assert rows.claim_due() == ([], False)  # no room
    with engine.begin() as conn:  # M1 and M2 delivered
        conn.execute(sa.text("UPDATE outbox SET sent_at = 2 WHERE msg_id IN ('M1', 'M2')"))
    rows.release(first[:2])
    second, more = rows.claim_due()
    assert [r.msg_id for r in second] == ["M6", "M7"] and more  # M4 and M5 still in flight
    rows.release([*first[2:], *second])
    third, more = rows.claim_due()
    assert [r.msg_id for r in third] == ["M4", "M5", "M6", "M7"] and more  # M8 next


def test_a_commits_own_rows_are_claimed_once_each_and_only_while_unsent(engine: Engine) -> None:
    _outbox(engine, 6, sent=1)
    rows = InFlight(engine)
    own, more = rows.claim_own(["M5", "M2", "M2", "M1", "M9"])  # M1 sent, M9 none
    assert [r.msg_id for r in own] == ["M2", "M5"] and not more
    again, _ = rows.claim_own(["M2", "M6"])  # M2 is in flight already
    assert [r.msg_id for r in again] == ["M6"]
