"""fastsql.run answers as Connection.execute does, on a real SQLite file, and falls back to it
for what it does not cover."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.config import DatabaseSettings
from gateway.db import UtcDateTime, make_engine
from gateway.sqlite import fastsql
from gateway.sqlite.fastsql import Rows, run

md = sa.MetaData()
items = sa.Table(
    "items",
    md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(20), nullable=False, unique=True),
    sa.Column("flag", sa.Boolean, nullable=False, default=False),
    sa.Column("n", sa.Integer, nullable=False, default=7),
    sa.Column("at", UtcDateTime, nullable=True),
    sa.Column("blob", sa.LargeBinary, nullable=True),
)
tags = sa.Table(
    "tags",
    md,
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("tag", sa.String(10), primary_key=True),
)

_b = sa.bindparam
INSERT = items.insert()
INSERT_RETURNING = items.insert().returning(items.c.id)
BY_NAME = sa.select(items).where(items.c.name == _b("name"))
BY_NAMES = sa.select(items.c.name).where(items.c.name.in_(_b("names", expanding=True)))
NOT_IN = sa.select(items.c.name).where(items.c.name.not_in(_b("names", expanding=True)))
JOINED = (
    sa.select(items.c.name, items.c.flag, tags.c.tag.label("item_tag"))
    .join(tags, tags.c.item_id == items.c.id)
    .where(items.c.n >= _b("min_n"))
    .order_by(items.c.name, tags.c.tag)
)
SET = items.update().where(items.c.name == _b("k_name"))
FLIP = (
    items.update()
    .where(items.c.name == _b("k_name"))
    .values(n=items.c.n + 1, flag=sa.case((items.c.n > 7, True), else_=False))
)
CALLABLE_DEFAULT = sa.Table(
    "stamps",
    md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("s", sa.Integer, default=lambda: 42),
).insert()
AT = datetime(2026, 11, 25, 1, 2, 3, 456000, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'fast.db'}")
    md.create_all(eng)
    yield eng
    eng.dispose()


def _rows(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in result]


def _seed(conn: Connection) -> None:
    run(conn, INSERT, {"name": "a", "at": AT})
    run(conn, INSERT, [{"name": "b", "flag": True, "n": 9}, {"name": "e", "flag": False, "n": 1}])
    run(conn, INSERT, {"name": "c", "blob": b"\x00\x01"})
    run(conn, sa.insert(tags), [{"item_id": 1, "tag": "x"}, {"item_id": 1, "tag": "y"}])


def test_reads_match_sqlalchemy_with_types_and_defaults(engine: Engine) -> None:
    with engine.begin() as conn:
        _seed(conn)
        for stmt, params in [
            (BY_NAME, {"name": "a"}),
            (BY_NAME, {"name": "b"}),
            (BY_NAME, {"name": "c"}),
            (BY_NAMES, {"names": ["a", "c", "zz"]}),
            (NOT_IN, {"names": ["a"]}),
            (NOT_IN, {"names": []}),
            (BY_NAMES, {"names": []}),
            (JOINED, {"min_n": 0}),
        ]:
            fast = run(conn, stmt, params)
            assert _rows(fast) == _rows(conn.execute(stmt, params)), (stmt, params)
        row = run(conn, BY_NAME, {"name": "a"}).one()
        assert row.flag is False and row.n == 7 and row.at == AT and row.at.tzinfo is not None
        assert row._mapping["name"] == "a"
        assert run(conn, BY_NAME, {"name": "c"}).one().blob == b"\x00\x01"
        joined = run(conn, JOINED, {"min_n": 0}).all()
        assert [(r.name, r.item_tag) for r in joined] == [("a", "x"), ("a", "y")]


def test_writes_rowcounts_returning_and_result_shapes(engine: Engine) -> None:
    with engine.begin() as conn:
        _seed(conn)
        new_id = run(conn, INSERT_RETURNING, {"name": "d"}).scalar_one()
        assert new_id == 5
        assert run(conn, SET, {"k_name": "d", "n": 1, "flag": True}).rowcount == 1
        assert run(conn, SET, {"k_name": "nobody", "n": 1}).rowcount == 0
        assert run(conn, FLIP, {"k_name": "b"}).rowcount == 1
        b = run(conn, BY_NAME, {"name": "b"}).one()
        assert (b.n, b.flag) == (10, True)
        many = run(conn, SET, [{"k_name": "a", "n": 2}, {"k_name": "c", "n": 3}])
        assert isinstance(many, Rows) and many.rowcount == 2
        result = run(conn, BY_NAME, {"name": "nobody"})
        assert result.first() is None and result.one_or_none() is None and result.scalar() is None
        with pytest.raises(sa.exc.NoResultFound):
            result.one()
        with pytest.raises(sa.exc.MultipleResultsFound):
            run(conn, BY_NAMES, {"names": ["a", "b"]}).one()


def test_driver_errors_are_sqlalchemy_errors_and_the_transaction_rolls_back(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        _seed(conn)

    def clash() -> None:
        with engine.begin() as conn:
            run(conn, SET, {"k_name": "c", "n": 100})
            run(conn, INSERT, {"name": "a"})  # unique name

    with pytest.raises(sa.exc.IntegrityError):
        clash()
    with engine.connect() as conn:
        assert run(conn, BY_NAME, {"name": "c"}).one().n == 7  # the first write rolled back


def test_a_connection_outside_a_transaction_begins_one(engine: Engine) -> None:
    begun: list[Connection] = []
    sa.event.listen(engine, "begin", begun.append)
    with engine.connect() as conn:
        run(conn, INSERT, {"name": "z"})
        assert conn.in_transaction() and len(begun) == 1
        conn.rollback()
    with engine.connect() as conn:
        assert run(conn, BY_NAME, {"name": "z"}).first() is None


def test_what_it_does_not_cover_goes_through_sqlalchemy(engine: Engine) -> None:
    with engine.begin() as conn:
        result = run(conn, CALLABLE_DEFAULT, {"id": 1})  # a callable default
        assert not isinstance(result, Rows)
        assert conn.execute(sa.text("SELECT s FROM stamps")).scalar_one() == 42
        with pytest.raises(sa.exc.StatementError):  # a missing parameter, as SQLAlchemy says
            run(conn, BY_NAME, {})
        with pytest.raises(sa.exc.StatementError):  # executemany rows with other keys
            run(conn, INSERT, [{"name": "p", "n": 1}, {"name": "q"}])
    key = (id(CALLABLE_DEFAULT), frozenset({"id"}))
    assert fastsql._plans[key] is None


@pytest.fixture
def gateway_engine(tmp_path: Path) -> Iterator[Engine]:
    """The gateway's own engine (BEGIN IMMEDIATE, the in-process writer queue)."""
    eng = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'gw.db'}"))
    md.create_all(eng)
    yield eng
    eng.dispose()


def _names(conn: Connection) -> list[str]:
    return [r.name for r in run(conn, sa.select(items.c.name).order_by(items.c.name))]


class Refused(Exception):
    pass


def _refused_block(conn: Connection) -> None:
    with fastsql.savepoint(conn):
        run(conn, INSERT, {"name": "undone"})
        with fastsql.savepoint(conn):  # nested: undone with its parent
            run(conn, INSERT, {"name": "undone-inner"})
        raise Refused


def _duplicate_block(conn: Connection) -> None:
    with fastsql.savepoint(conn):
        run(conn, INSERT, {"name": "kept"})  # a driver error inside


def test_a_savepoint_undoes_only_its_own_writes(gateway_engine: Engine) -> None:
    with gateway_engine.begin() as conn:
        run(conn, INSERT, {"name": "before"})
        with fastsql.savepoint(conn):
            run(conn, INSERT, {"name": "kept"})
        with pytest.raises(Refused):
            _refused_block(conn)
        with pytest.raises(sa.exc.IntegrityError):
            _duplicate_block(conn)
        run(conn, INSERT, {"name": "after"})
        assert _names(conn) == ["after", "before", "kept"]
    with gateway_engine.connect() as conn:
        assert _names(conn) == ["after", "before", "kept"]  # committed as a whole


def _released_then_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        with fastsql.savepoint(conn):
            run(conn, INSERT, {"name": "released"})
        raise Refused


def test_a_savepoint_is_undone_with_its_transaction(gateway_engine: Engine) -> None:
    with pytest.raises(Refused):
        _released_then_refused(gateway_engine)
    with gateway_engine.connect() as conn:
        assert _names(conn) == []
