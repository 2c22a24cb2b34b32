"""Schema migrations on fresh SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import gateway.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from gateway.config import DatabaseSettings
from gateway.db import (
    SchemaOutOfDate,
    _alembic_config,
    check_schema,
    compared_with_models,
    make_engine,
    schema_revisions,
    upgrade,
)
from gateway.ledger import service
from gateway.ledger.store import LedgerUnitOfWork


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh database with no schema at all."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        url = factory()
    eng = make_engine(DatabaseSettings(url=url))
    yield eng
    eng.dispose()


def tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_on_a_fresh_database_reaches_head(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    current, head = schema_revisions(empty_engine)
    assert current == head
    check_schema(empty_engine)
    assert {"ledger_wallet", "ledger_transfer", "ledger_lock", "ledger_entry", "outbox"} <= tables(
        empty_engine
    )
    issuance = service.get_wallet(LedgerUnitOfWork(empty_engine), "issuance-KZT")
    assert (issuance.posted, issuance.reserved) == (0, 0)


def test_upgrade_twice_is_harmless(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    upgrade(empty_engine)
    check_schema(empty_engine)


def test_check_schema_refuses_an_empty_database(empty_engine: Engine) -> None:
    with pytest.raises(SchemaOutOfDate) as exc:
        check_schema(empty_engine)
    assert exc.value.code == "SCHEMA_OUT_OF_DATE"
    assert schema_revisions(empty_engine)[0] is None


def test_check_schema_refuses_a_database_behind_head(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0001")
    if schema_revisions(empty_engine)[1] == "0001":
        pytest.skip("only one migration exists")
    with pytest.raises(SchemaOutOfDate):
        check_schema(empty_engine)


def test_downgrade_to_base_and_upgrade_again(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    command.downgrade(_alembic_config(empty_engine), "base")
    assert schema_revisions(empty_engine)[0] is None
    assert tables(empty_engine) <= {"alembic_version"}
    upgrade(empty_engine)
    check_schema(empty_engine)
    assert service.check_invariants(LedgerUnitOfWork(empty_engine)).ok


def test_migrated_schema_matches_the_table_models(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        opts = {"compare_type": True, "include_object": compared_with_models}
        ctx = MigrationContext.configure(conn, opts=opts)
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []


def test_message_links_survive_their_rekeying_both_ways(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0005")
    now = "2026-12-02 10:00:00.000000"
    with empty_engine.begin() as conn:
        for i in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO pvp_message (id, direction, sha256, raw, created_at)"
                    " VALUES (:id, 'in', :sha, :raw, :at)"
                ),
                {"id": i, "sha": f"{i:064x}", "raw": b"<x/>", "at": now},
            )
        links = [(1, "u-a"), (1, "u-b"), (2, "u-a")]
        conn.execute(
            sa.text("INSERT INTO pvp_message_leg (message_id, uetr) VALUES (:m, :u)"),
            [{"m": m, "u": u} for m, u in links],
        )

    def stored() -> list[tuple[str, int]]:
        with empty_engine.connect() as conn:
            q = "SELECT uetr, message_id FROM pvp_message_leg ORDER BY uetr, message_id"
            return [(r[0], int(r[1])) for r in conn.execute(sa.text(q))]

    expected = [("u-a", 1), ("u-a", 2), ("u-b", 1)]
    upgrade(empty_engine)
    assert stored() == expected
    with empty_engine.connect() as conn:
        assert "ix_pvp_message_leg_uetr" not in {
            ix["name"] for ix in sa.inspect(conn).get_indexes("pvp_message_leg")
        }
        pk = sa.inspect(conn).get_pk_constraint("pvp_message_leg")["constrained_columns"]
        assert pk == ["uetr", "message_id"]
    command.downgrade(_alembic_config(empty_engine), "0005")
    assert stored() == expected
    upgrade(empty_engine)
    assert stored() == expected


def _compression(engine: Engine, columns: tuple[tuple[str, str], ...]) -> set[str]:
    """The compression method each column is set to ('' for the server's default)."""
    with engine.connect() as conn:
        return {
            conn.exec_driver_sql(
                "SELECT attcompression FROM pg_attribute"
                " WHERE attrelid = %(t)s::regclass AND attname = %(c)s",
                {"t": table, "c": column},
            ).scalar_one()
            for table, column in columns
        }


@pytest.mark.postgres
def test_messages_are_compressed_with_lz4_on_postgresql(
    pg_database_factory: Callable[[], str],
) -> None:
    """The gateway's messages (migration 0015) and the connector's: LZ4 (~8x less server CPU
    than pglz for a batched message); downgraded, the server's default again."""
    from gateway.connector import schema as connector_schema
    from gateway.connector import store as connector_store

    messages = (("pvp_message", "raw"), ("outbox", "payload"), ("webhook_event", "body"))
    engine = make_engine(DatabaseSettings(url=pg_database_factory()))
    try:
        upgrade(engine)
        assert _compression(engine, messages) == {"l"}
        command.downgrade(_alembic_config(engine), "0014")
        assert _compression(engine, messages) == {""}
    finally:
        engine.dispose()
    connector = connector_store.make_engine(pg_database_factory())
    try:
        connector_schema.create_schema(connector)
        connector_schema.create_schema(connector)  # again, as at every start: harmless
        stored = (("inbox", "raw"), ("message_bodies", "raw"), ("pvp_messages", "raw"))
        assert _compression(connector, (*stored, ("outbox", "payload"))) == {"l"}
    finally:
        connector.dispose()
