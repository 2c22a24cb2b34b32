"""The simulated banks' statements on their tables (``sim_*`` of :mod:`gateway.connector.schema`)
and the typed rows they read, built once as :mod:`gateway.connector.store`'s are: marked for the
pipeline of a PostgreSQL write transaction (:mod:`gateway.connector.pgtx`) and run straight on
the driver on SQLite (:func:`gateway.sqlite.fastsql.run`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from gateway.connector.pgtx import queued, waited
from gateway.connector.rows import SimAccountRow, SimLockRow, SimLockState
from gateway.connector.schema import sim_accounts, sim_issuance, sim_locks
from gateway.sqlite.fastsql import run

_b = sa.bindparam

SELECT_SIM_ACCOUNT = waited(
    sa.select(sim_accounts).where(
        (sim_accounts.c.currency == _b("currency")) & (sim_accounts.c.account == _b("account"))
    )
)
INSERT_SIM_ACCOUNT = queued(sim_accounts.insert())
# Adds (signed) amounts to an account's available and held funds.
MOVE_SIM_FUNDS = queued(
    sim_accounts.update()
    .where(
        (sim_accounts.c.currency == _b("k_currency")) & (sim_accounts.c.account == _b("k_account"))
    )
    .values(
        available=sim_accounts.c.available + _b("d_available"),
        held=sim_accounts.c.held + _b("d_held"),
    )
)
# PostgreSQL: credit an account, opening it if need be (SQLite: MOVE_SIM_FUNDS, then
# INSERT_SIM_ACCOUNT if it moved no row).
_UPSERT_SIM_ACCOUNT = pg_insert(sim_accounts)
CREDIT_SIM_ACCOUNT = queued(
    _UPSERT_SIM_ACCOUNT.on_conflict_do_update(
        index_elements=[sim_accounts.c.currency, sim_accounts.c.account],
        set_={"available": sim_accounts.c.available + _UPSERT_SIM_ACCOUNT.excluded.available},
    )
)
INSERT_SIM_ISSUANCE = queued(sim_issuance.insert())
SELECT_SIM_LOCK = waited(sa.select(sim_locks).where(sim_locks.c.uetr == _b("uetr")))
# PostgreSQL (``_Reads`` of ``gateway.connector.sim``): the locks and debtors' accounts a message's
# transactions name, read at once.
SELECT_SIM_LOCKS = sa.select(sim_locks).where(
    sim_locks.c.uetr == sa.any_(_b("uetrs", type_=ARRAY(sa.String)))
)
SELECT_SIM_ACCOUNTS = sa.select(sim_accounts).where(
    (sim_accounts.c.currency == _b("currency"))
    & (sim_accounts.c.account == sa.any_(_b("accounts", type_=ARRAY(sa.String))))
)
INSERT_SIM_LOCK = queued(sim_locks.insert())
SET_SIM_LOCK_STATE = queued(sim_locks.update().where(sim_locks.c.uetr == _b("k_uetr")))


def read_sim_account(conn: Connection, currency: str, account: str) -> SimAccountRow | None:
    row = run(conn, SELECT_SIM_ACCOUNT, {"currency": currency, "account": account}).first()
    return None if row is None else SimAccountRow(*row)


_SIM_LOCK_COLUMNS = tuple(sim_locks.c.keys())
_SIM_LOCK_STATE = _SIM_LOCK_COLUMNS.index("state")


def sim_lock_values(lock: SimLockRow) -> tuple[Any, ...]:
    """The lock's columns, in the table's order."""
    return tuple(getattr(lock, name) for name in _SIM_LOCK_COLUMNS)


def insert_sim_lock(conn: Connection, lock: SimLockRow) -> None:
    run(conn, INSERT_SIM_LOCK, dict(zip(_SIM_LOCK_COLUMNS, sim_lock_values(lock), strict=True)))


def sim_lock_row(row: Sequence[Any]) -> SimLockRow:
    values = list(row)
    values[_SIM_LOCK_STATE] = SimLockState(values[_SIM_LOCK_STATE])
    return SimLockRow(*values)


def read_sim_lock(conn: Connection, uetr: str) -> SimLockRow | None:
    row = run(conn, SELECT_SIM_LOCK, {"uetr": uetr}).first()
    return None if row is None else sim_lock_row(row)


__all__ = [
    "CREDIT_SIM_ACCOUNT",
    "INSERT_SIM_ACCOUNT",
    "INSERT_SIM_ISSUANCE",
    "MOVE_SIM_FUNDS",
    "SELECT_SIM_ACCOUNT",
    "SELECT_SIM_ACCOUNTS",
    "SELECT_SIM_LOCK",
    "SELECT_SIM_LOCKS",
    "SET_SIM_LOCK_STATE",
    "insert_sim_lock",
    "read_sim_account",
    "read_sim_lock",
    "sim_lock_row",
    "sim_lock_values",
]
