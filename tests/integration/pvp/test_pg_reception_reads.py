"""The first statement of a message received at the gateway on PostgreSQL
(``gateway.pvp.pgstore``): its duplicate check, the legs it names locked and read and, when
the message is applied in the same transaction, the instructions that follow them, locked and
read too. The SQL repository, asked the same on the same database, is the oracle."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.pvp.pgstore import PgPvPRepository
from gateway.pvp.store import PvPUnitOfWork, SqlPvPRepository
from tests.support.databases import PgDatabases, migrated_engine
from tests.unit.pvp.builders import instruction

pytestmark = pytest.mark.postgres

SENDER, PACS009 = "SWHQBEBBXXX", "pacs.009.001.08"


@pytest.fixture
def engine(pg_database_factory: PgDatabases) -> Iterator[Engine]:
    engine = migrated_engine(pg_database_factory(migrated=True), pool_size=3)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO pvp_leg (uetr, state, end_to_end_id, status_requests, created_at,"
            " updated_at) VALUES ('uetr-1', 'locked', 'e2e-1', 0, now(), now())"
        )
        conn.exec_driver_sql(
            "INSERT INTO pvp_message (direction, sender_bic, msg_def_id, msg_id, sha256, raw,"
            f" created_at) VALUES ('in', '{SENDER}', '{PACS009}', 'seen', 'ab12', '', now())"
        )
        for instruction_id in ("e2e-1", "e2e-2"):
            SqlPvPRepository(conn).insert_instruction(instruction(instruction_id=instruction_id))
    yield engine
    engine.dispose()


def _locked(engine: Engine, sql: str) -> bool:
    """Whether another transaction holds the row lock ``sql`` asks for."""
    with engine.connect() as other:
        try:
            other.exec_driver_sql(f"{sql} FOR UPDATE NOWAIT")
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock not available
                raise
            return True
        return False


@pytest.mark.parametrize(
    ("msg_id", "sha"), [("seen", "ab12"), ("new", None)], ids=["received before", "new"]
)
def test_the_check_the_legs_and_the_instructions_come_in_one_statement(
    engine: Engine, msg_id: str, sha: str | None
) -> None:
    uow = PvPUnitOfWork(engine)
    with engine.connect() as other, uow:
        oracle = SqlPvPRepository(other)  # another transaction: what is committed, unlocked
        repo = uow.pvp
        assert isinstance(repo, PgPvPRepository)
        got = repo.inbound_sha(
            SENDER, PACS009, msg_id, legs=["uetr-1", "uetr-new"], instructions=["e2e-1", "e2e-0"]
        )
        assert got == oracle.inbound_sha(SENDER, PACS009, msg_id) == sha
        assert _locked(engine, "SELECT 1 FROM pvp_leg WHERE uetr = 'uetr-1'")
        assert _locked(engine, "SELECT 1 FROM pvp_instruction WHERE instruction_id = 'e2e-1'")
        assert not _locked(engine, "SELECT 1 FROM pvp_instruction WHERE instruction_id = 'e2e-2'")
        legs = repo.legs_for_update(["uetr-1", "uetr-new"])
        assert legs == oracle.legs(["uetr-1", "uetr-new"])
        assert list(legs) == ["uetr-1"]
        repo.prefetch_instructions(["e2e-1"])  # read already: nothing more asked
        followed = repo.instructions_for_update(["e2e-1"])
        assert followed == {"e2e-1": oracle.instruction("e2e-1")}
        # Read once: a second ask reads again (the transaction may have changed them).
        assert repo.instructions_for_update(["e2e-2"]) == {"e2e-2": oracle.instruction("e2e-2")}
