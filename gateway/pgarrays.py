"""PostgreSQL arrays as the statements that write or read many rows at once send them
(``unnest(%s::<type>[], ...)``, ``= ANY(%s::<type>[])``): a column's element type
(:func:`array_type`), a list as one array literal (:func:`pg_array`); and, where only a few
are sent, rows as parameters of their own (:func:`values_of`) and a few values likewise
(:func:`any_of`), whose plans PostgreSQL keeps."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa


def array_type(column_type: Any) -> str:
    """The PostgreSQL type of a column's values as an array's element, for the statements that
    write many rows through ``unnest(%s::<type>[], ...)`` (a timezone-aware date-time column,
    such as ``gateway.db.UtcDateTime``, is ``timestamptz``)."""
    impl = getattr(column_type, "impl", column_type)  # a TypeDecorator's underlying type
    if isinstance(impl, sa.DateTime):
        return "timestamptz"
    if isinstance(impl, sa.Integer):  # BigInteger too
        return "bigint"
    if isinstance(impl, sa.Boolean):
        return "boolean"
    if isinstance(impl, sa.LargeBinary):
        return "bytea"
    return "text"


def pg_array(values: Iterable[Any]) -> str:
    """``values`` (str, int, bool, bytes, an aware datetime or None) as an array literal, for a
    parameter cast to an array type: the driver sends a string at once, where it dumps a list
    element by element (its escaping took ~40 % of a 100-operation ledger batch's CPU; for the
    connector's held-back writes, a flush-shaped statement's client CPU halves)."""
    vs = values if isinstance(values, list | tuple) else list(values)
    kinds = set(map(type, vs))
    if kinds == {int}:
        return "{" + ",".join(map(str, vs)) + "}"
    if kinds == {str}:
        plain = "".join(vs)
        if "\\" not in plain and '"' not in plain:
            return '{"' + '","'.join(vs) + '"}'
    if kinds == {bool}:
        return "{" + ",".join(["t" if v else "f" for v in vs]) + "}"
    if kinds == {datetime}:
        # A batch's rows mostly share a few moments (its ``now``): each formatted once.
        iso = {v: v.isoformat() for v in set(vs)}
        return '{"' + '","'.join([iso[v] for v in vs]) + '"}'
    parts = []
    for v in vs:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, str):
            parts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif isinstance(v, bool):
            parts.append("t" if v else "f")
        elif isinstance(v, int):
            parts.append(str(int(v)))  # an IntEnum's str() is its name
        elif isinstance(v, bytes | bytearray | memoryview):
            # bytea's hex input, its backslash escaped for the array's parser
            parts.append('"\\\\x' + bytes(v).hex() + '"')
        elif isinstance(v, datetime):
            parts.append('"' + v.isoformat() + '"')
        else:
            raise TypeError(f"cannot put {v!r} in an array literal")
    return "{" + ",".join(parts) + "}"


_UNNEST = re.compile(r"unnest\(((?:%s::[a-z]+\[\](?:, )?)+)\)( WITH ORDINALITY)?( AS )?")


FEW_ROWS = 4
"""Up to this many rows, a many-row statement gets them as rows of parameters
(:func:`values_of`): cheaper for the server than arrays up to ~4 rows, dearer from ~8."""


def values_of(sql: str, *counts: int) -> str:
    """``sql`` with each ``unnest(%s::<type>[], ...)`` of it as rows of parameters of their
    own, ``(VALUES (%s::<type>, ...), (%s, ...))`` (``WITH ORDINALITY``: each row's number
    last), for :func:`values_params`: ``counts``, one for each ``unnest`` in its order, the
    number of its rows (0: that one left as arrays; :func:`rows_params` gives both).

    A short array costs the server far more than its values alone: the array's parse and the
    function scan's set-up, ~5 µs an array, and a flush of an unbatched PvP sends 20 to 60
    arrays. And a prepared statement over arrays is planned again at every execution, the
    planner reckoning on ten rows an array (see :func:`any_of`): with the rows spelled out,
    the plan made once is kept."""

    found = iter(counts)

    def values(m: re.Match[str]) -> str:
        n = next(found, None)
        if n is None:
            raise ValueError("fewer counts than unnest() in the statement")
        if not n:
            return m.group(0)
        types = [p.removeprefix("%s").removesuffix("[]") for p in m.group(1).split(", ")]
        first = ", ".join(f"%s{t}" for t in types)
        rest = ", ".join(["%s"] * len(types))
        rows = [first, *[rest] * (n - 1)]
        if m.group(2):
            rows = [f"{r}, {i}::bigint" for i, r in enumerate(rows, 1)]
        alias = " " if m.group(3) else " v"
        return "(VALUES " + ", ".join(f"({r})" for r in rows) + ") AS" + alias

    out = _UNNEST.sub(values, sql)
    if next(found, None) is not None:
        raise ValueError("more counts than unnest() in the statement")
    return out


def rows_params(columns: Sequence[Sequence[Any]]) -> tuple[int, list[Any]]:
    """The rows of ``columns`` (one list of values per column) as one ``unnest`` of a
    statement takes them: up to :data:`FEW_ROWS` rows, their number (its count for
    :func:`values_of`) and :func:`values_params`; more, 0 and an array literal per column."""
    n = len(columns[0]) if columns else 0
    if 0 < n <= FEW_ROWS:
        return n, values_params(columns)
    return 0, [pg_array(column) for column in columns]


def values_params(columns: Sequence[Sequence[Any]]) -> list[Any]:
    """The parameters of :func:`values_of`'s form, row after row, of ``columns`` (one list of
    values per column): an int as its digits, so that the driver sends every number with one
    type (it sends an int as int2, int4 or int8 by its size, and prepares a statement once
    per combination of types)."""
    return [
        str(int(v)) if isinstance(v, int) and not isinstance(v, bool) else v
        for row in zip(*columns, strict=True)
        for v in row
    ]


FEW = 8
"""Up to this many values, ``= ANY(...)`` gets them as parameters of their own (:func:`any_of`)."""


def any_of(n: int, element: str = "text") -> str:
    """The operand of ``= ANY(...)`` for ``n`` values: ``ARRAY[%s, ...]`` for a few, one array
    parameter for more (:func:`any_params` gives the parameters).

    The planner knows how many values an ``ARRAY[...]`` of parameters holds; of one array
    parameter it knows nothing, and reckons on ten. A prepared statement's generic plan, made
    once, then looks dearer than a plan made for the values at hand, so PostgreSQL plans the
    statement again at every execution: for the connector's look-up of a message's legs with
    their PvPs, ~600 of its ~760 µs of server CPU a call. With the number known, the generic
    plan costs what a custom one does and is kept (a statement text for each number up to
    :data:`FEW`, each prepared on its own)."""
    if 0 < n <= FEW:
        return "ARRAY[" + ", ".join(["%s"] * n) + f"]::{element}[]"
    return f"%s::{element}[]"


def any_params(values: Sequence[Any]) -> list[Any]:
    """The parameters of :func:`any_of` for ``values``."""
    if 0 < len(values) <= FEW:
        return list(values)
    return [pg_array(values)]


__all__ = [
    "FEW",
    "FEW_ROWS",
    "any_of",
    "any_params",
    "array_type",
    "pg_array",
    "rows_params",
    "values_of",
    "values_params",
]
