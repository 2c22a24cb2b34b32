"""Arrays sent to PostgreSQL as one literal each (``gateway.pgarrays.pg_array``): what the hot
paths' ``unnest`` and ``= ANY`` statements take. The server reads back each value; and a few
rows sent as rows of parameters (``values_of``) are the rows the arrays give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.pgarrays import FEW, FEW_ROWS, any_of, any_params, pg_array, values_of, values_params

pytestmark = pytest.mark.postgres


class _Level(IntEnum):
    HIGH = 3


class _Kind(StrEnum):
    PLAIN = "plain"


def test_array_literals_carry_what_the_lists_hold(pg_url: str) -> None:
    texts = ["plain", 'a "quoted", {braced} one', "back\\slash\\", "", "NULL", " spaced ", "ü"]
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    cases: list[tuple[list[Any], str]] = [
        (texts, "text[]"),
        ([None, "x", None], "text[]"),
        ([0, -(2**63), 2**63 - 1], "bigint[]"),
        ([at, at.astimezone(timezone(timedelta(hours=5)))], "timestamptz[]"),
        ([at, at + timedelta(microseconds=1), at], "timestamptz[]"),
        ([], "text[]"),
        ([True, False], "boolean[]"),
        ([True, None], "boolean[]"),
        ([b"<a/>", b"", bytes(range(256))], "bytea[]"),
        ([b"<a/>", None], "bytea[]"),
        ([_Level.HIGH, 7, None], "bigint[]"),
        ([_Kind.PLAIN, 'with "quotes"', None], "text[]"),
    ]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            for values, cast in cases:
                sql = f"SELECT %(v)s::{cast}"
                got = conn.exec_driver_sql(sql, {"v": pg_array(values)}).scalar()
                assert got == values, cast
    finally:
        engine.dispose()


@pytest.mark.parametrize("n", [1, 2, FEW, FEW + 1, 40])
def test_any_of_finds_the_values_it_is_given(pg_url: str, n: int) -> None:
    """A few values as parameters of their own, more as one array: the same rows."""
    values = [f"v-{i}" for i in range(n)]
    wanted = [*values[1:], "absent"]  # n values, all but one there
    sql = f"SELECT v FROM unnest(%s::text[]) AS t(v) WHERE v = ANY({any_of(n)}) ORDER BY v"
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            params = (pg_array([*values, "other"]), *any_params(wanted))
            got = conn.exec_driver_sql(sql, params).scalars().all()
    finally:
        engine.dispose()
    assert got == sorted(values[1:])
    assert ("ARRAY[" in any_of(n)) == (n <= FEW)


@pytest.mark.parametrize("n", range(1, FEW_ROWS + 1))
def test_a_few_rows_as_values_are_the_rows_the_arrays_give(pg_url: str, n: int) -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows: list[tuple[Any, ...]] = [
        ('a "quoted" one', 2**63 - 1, True, b"<a/>", at),
        (None, 7, None, None, None),
        ("back\\slash", _Level.HIGH, False, bytes(range(256)), at),
        (_Kind.PLAIN, 100, True, b"", at + timedelta(days=1)),
    ][:n]
    sql = (
        "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::boolean[], %s::bytea[],"
        " %s::timestamptz[]) WITH ORDINALITY AS r(t, i, b, raw, at, n) ORDER BY n"
    )
    columns = [list(c) for c in zip(*rows, strict=True)]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            arrays = conn.exec_driver_sql(sql, tuple(pg_array(c) for c in columns)).all()
            values = conn.exec_driver_sql(values_of(sql, n), tuple(values_params(columns))).all()
    finally:
        engine.dispose()
    assert values == arrays
    assert [tuple(r[:5]) for r in arrays] == [tuple(map(_plain, row)) for row in rows]
    assert "unnest" not in values_of(sql, n)


def _plain(v: Any) -> Any:
    """What the server gives back for a value sent: an IntEnum's number, a StrEnum's text."""
    return int(v) if isinstance(v, IntEnum) else str(v) if isinstance(v, StrEnum) else v


def test_each_unnest_takes_its_own_count_and_zero_keeps_its_arrays(pg_url: str) -> None:
    sql = (
        "SELECT a.x, b.y FROM unnest(%s::bigint[]) WITH ORDINALITY AS a(x, n)"
        " JOIN unnest(%s::text[], %s::bigint[]) AS b(y, n) USING (n) ORDER BY n"
    )
    xs, ys = [10, 20], ["one", "two"]
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            both = values_of(sql, 2, 0)
            params = (*values_params([xs]), pg_array(ys), pg_array([1, 2]))
            got = conn.exec_driver_sql(both, params).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in got] == [(10, "one"), (20, "two")]
    assert both.count("unnest(") == 1
    with pytest.raises(ValueError, match="more counts"):
        values_of(sql, 2, 0, 1)
