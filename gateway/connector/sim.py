"""Simulated foreign central banks: one small ledger per configured currency, behaving like a
correct partner network, so that a PvP runs end to end with nobody else.

Each network receives the same ISO 20022 envelopes a real partner would (parsed and validated
with :func:`gateway.iso20022.parse`) and answers with built, validated messages:

- ``pacs.009``: per leg, lock the debtor's funds under the condition -> pacs.002 ACSP, or RJCT
  AC01 (unknown debtor account), AM04 (insufficient funds), AM11 (wrong currency), or the
  reason of an injected ``reject`` fault;
- ``pacs.002`` ACSP with the fulfilment -> commit the lock to the creditor -> pacs.002 ACSC;
- ``camt.056`` -> release -> camt.029 CNCL; already committed -> camt.029 RJCR (ARDT); unknown
  leg -> a tombstone (a later pacs.009 is rejected) and CNCL;
- ``pacs.028`` -> pacs.002 with the leg's status.

Every message is handled idempotently by UETR: a duplicate is answered again from the stored
state, never applied twice. An ``outage`` fault rule makes a bank fail once it has handled a
message, before answering: what the handling wrote is undone with the transaction it was
written in, and the connector delivers the message again. Money: ``available + held`` summed
over a currency's accounts always equals what was issued into it (``check``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.connector import pgtx, simstore, store
from gateway.connector.faults import Faults
from gateway.connector.rows import SimAccountRow, SimLockRow, SimLockState
from gateway.connector.schema import sim_accounts, sim_issuance, sim_locks
from gateway.connector.store import now_ms
from gateway.errors import InvalidInput, NotFound
from gateway.ids import sortable_id
from gateway.iso20022 import (
    Camt029,
    Camt056,
    CancellationResolution,
    CreditTransfer,
    Message,
    MessageRejected,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    TransactionStatus,
    build,
    header_for,
    parse,
)
from gateway.sqlite.fastsql import run

log = logging.getLogger(__name__)

PACS009 = "pacs.009.001.08"


def new_id(prefix: str = "S") -> str:
    return sortable_id(prefix)


_LOCKS = frozenset({"sim_locks"})
_ACCOUNTS = frozenset({"sim_accounts"})
_HELD_BACK: frozenset[str] = frozenset()
"""A read that sends none of the writes held back (it adds them itself)."""


class _Reads:
    """The locks and accounts one message's handling reads. On SQLite each is read when asked
    for; on PostgreSQL those the message names are read at once, one round trip in the
    transaction's pipeline (:mod:`gateway.connector.pgtx`), and kept up to date with what the
    handling writes (a transaction's reads see its own writes)."""

    def __init__(
        self, conn: Connection, currency: str, uetrs: list[str], accounts: Sequence[str] = ()
    ) -> None:
        self.conn = conn
        self.currency = currency
        self.locks: dict[str, SimLockRow | None] | None = None
        self.accounts: dict[str, SimAccountRow | None] | None = None
        tx = pgtx.tx_of(conn)
        if tx is None:
            return
        if len(uetrs) == 1:  # a plan PostgreSQL keeps (``pgrepo._SELECT_PVPS_OF_UETR``)
            locks = pgtx.query(tx, simstore.SELECT_SIM_LOCK, {"uetr": uetrs[0]}, _LOCKS)
        else:
            locks = pgtx.query(tx, simstore.SELECT_SIM_LOCKS, {"uetrs": uetrs}, _LOCKS)
        if accounts:
            # Read as stored, with the transaction's held-back moves added here: sent before
            # the read, they would hold the account's row (every PvP of a pair of banks moves
            # it) from then to the COMMIT, across the rest of the transaction's work.
            params = {"currency": currency, "accounts": list(accounts)}

            def stored_funds(sent: frozenset[str]) -> dict[str, tuple[int, int]]:
                found = pgtx.query(tx, simstore.SELECT_SIM_ACCOUNTS, params, sent)
                return {r[1]: (r[2], r[3]) for r in found.rows()}

            stored = stored_funds(_HELD_BACK)
            if any(a not in stored and tx.writes.opens(currency, a) for a in accounts):
                # An account that a credit held opens (rare): its row sent, and read again,
                # so that the moves that follow find it.
                stored = stored_funds(_ACCOUNTS)
            self.accounts = {
                a: None
                if a not in stored
                else SimAccountRow(currency, a, *tx.writes.funds(currency, a, stored[a]))
                for a in accounts
            }
        self.locks = dict.fromkeys(uetrs)
        self.locks.update((r[0], simstore.sim_lock_row(r)) for r in locks.rows())

    def lock(self, uetr: str) -> SimLockRow | None:
        if self.locks is None:
            return simstore.read_sim_lock(self.conn, uetr)
        return self.locks.get(uetr)

    def account(self, account: str) -> SimAccountRow | None:
        if self.accounts is None:
            return simstore.read_sim_account(self.conn, self.currency, account)
        return self.accounts.get(account)

    def locked(self, row: SimLockRow) -> None:
        """``row`` written (inserted, or its state set)."""
        if self.locks is not None:
            self.locks[row.uetr] = row

    def held(self, account: str, amount: int) -> None:
        """``amount`` of ``account``'s available funds moved to held."""
        if self.accounts is not None:
            row = self.accounts.get(account)
            if row is not None:
                self.accounts[account] = replace(
                    row, available=row.available - amount, held=row.held + amount
                )


class SimulatedOutage(RuntimeError):
    """A simulated bank failed while handling a message (an ``outage`` fault rule fired)."""


def _pvp_of(msg: Message) -> str | None:
    """The PvP a pacs.009 or pacs.002 is about, if only one (the others name none)."""
    if isinstance(msg, Pacs009 | Pacs002):
        pvps = {tx.pvp.pvp_id for tx in msg.transactions if tx.pvp is not None}
        if len(pvps) == 1:
            return pvps.pop()
    return None


class SimulatedNetworks:
    """All simulated central banks (currency -> BIC), sharing the connector's database."""

    def __init__(
        self,
        engine: Engine,
        banks: dict[str, str],
        *,
        connector_bic: str,
        faults: Faults,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.engine = engine
        self.banks = dict(banks)
        self.by_bic = {bic: ccy for ccy, bic in self.banks.items()}
        self.connector_bic = connector_bic
        self.faults = faults
        self.clock = clock
        self._built: Counter[str] = Counter()
        self._parsed: Counter[str] = Counter()
        self._received_lock = threading.Lock()

    # --- accounts ---------------------------------------------------------------------------

    def _currency(self, currency: str) -> str:
        if currency not in self.banks:
            raise NotFound(f"no simulated network for {currency}")
        return currency

    def issue(
        self, currency: str, account: str, amount: int, conn: Connection | None = None
    ) -> None:
        """Open ``account`` if needed and credit it ``amount`` new money (issuance)."""
        self._currency(currency)
        if not 1 <= len(account) <= 34 or amount < 0:
            raise InvalidInput("account must be 1-34 characters and amount >= 0")
        if conn is None:
            with self.engine.begin() as c:
                self.issue(currency, account, amount, c)
            return
        self._credit(conn, currency, account, amount)
        if amount:
            run(
                conn,
                simstore.INSERT_SIM_ISSUANCE,
                {"currency": currency, "account": account, "amount": amount, "at": self.clock()},
            )

    def seed(self, accounts: dict[str, dict[str, int]]) -> None:
        """Configured opening balances, applied once (an account that exists is left alone)."""
        with self.engine.begin() as conn:
            for currency, balances in accounts.items():
                if currency not in self.banks:
                    continue
                for account, amount in balances.items():
                    if simstore.read_sim_account(conn, currency, account) is None:
                        self.issue(currency, account, amount, conn)

    def balance(self, currency: str, account: str) -> dict[str, Any]:
        self._currency(currency)
        with store.reader(self.engine) as conn:
            row = simstore.read_sim_account(conn, currency, account)
        if row is None:
            raise NotFound(f"no {currency} account {account!r}")
        return {
            "currency": currency,
            "account": account,
            "available": row.available,
            "held": row.held,
            "total": row.available + row.held,
        }

    def check(self, currency: str) -> dict[str, Any]:
        """Conservation: balances sum to issuance; held funds equal the open locks."""
        self._currency(currency)
        with store.reader(self.engine) as conn:
            avail, held = conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(sim_accounts.c.available), 0),
                    sa.func.coalesce(sa.func.sum(sim_accounts.c.held), 0),
                ).where(sim_accounts.c.currency == currency)
            ).one()
            issued = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(sim_issuance.c.amount), 0)).where(
                    sim_issuance.c.currency == currency
                )
            ).scalar_one()
            locked = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(sim_locks.c.amount), 0)).where(
                    (sim_locks.c.currency == currency)
                    & (sim_locks.c.state == SimLockState.LOCKED.value)
                )
            ).scalar_one()
            negative = conn.execute(
                sa.select(sa.func.count()).where(
                    (sim_accounts.c.currency == currency)
                    & ((sim_accounts.c.available < 0) | (sim_accounts.c.held < 0))
                )
            ).scalar_one()
        avail, held, issued, locked = int(avail), int(held), int(issued), int(locked)
        return {
            "currency": currency,
            "ok": avail + held == issued and held == locked and negative == 0,
            "issued": issued,
            "available": avail,
            "held": held,
            "open_locks": locked,
        }

    # --- messages ---------------------------------------------------------------------------

    def handle(
        self,
        raw: bytes,
        bic: str,
        conn: Connection | None = None,
        *,
        message: Message | None = None,
    ) -> list[tuple[Message, bytes]]:
        """One envelope addressed to the simulated bank ``bic`` -> its answers, each as the
        typed message and its envelope (built, so schema-valid), in the caller's transaction
        ``conn`` if given, else in its own. ``message``: what ``raw`` was built from, when the
        caller has it (the connector, in process), taken instead of parsing ``raw``.
        An ``outage`` fault rule that fires makes the handling fail once it has been applied,
        with :class:`SimulatedOutage`: the transaction it was applied in is to be rolled back."""
        currency = self.by_bic[bic]
        if message is not None:
            msg = message
        else:
            try:
                msg = parse(raw).message
            except MessageRejected as exc:
                # A correct partner would answer admi.002; the connector only logs those.
                log.error("simulated %s refused a message: %s", currency, exc)
                return []
        with self._received_lock:
            (self._built if message is not None else self._parsed)[msg.MESSAGE_ID] += 1
        if conn is None:
            with self.engine.begin() as own:
                return self._handle(own, currency, bic, msg)
        return self._handle(conn, currency, bic, msg)

    def received(self) -> dict[str, dict[str, int]]:
        """The messages handled so far, by message name: ``built``, taken typed as the
        connector built them, and ``parsed`` from their bytes (not at hand, or posted)."""
        with self._received_lock:
            return {"built": dict(self._built), "parsed": dict(self._parsed)}

    def _handle(
        self, conn: Connection, currency: str, bic: str, msg: Message
    ) -> list[tuple[Message, bytes]]:
        answers: list[Message] = []
        if isinstance(msg, Pacs009):
            answers.append(self._on_pacs009(conn, currency, msg))
        elif isinstance(msg, Pacs002):
            answers.append(self._on_pacs002(conn, currency, msg))
        elif isinstance(msg, Camt056):
            answers.extend(self._on_camt056(conn, currency, bic, msg))
        elif isinstance(msg, Pacs028):
            answers.append(self._on_pacs028(conn, currency, msg))
        else:
            log.info("simulated %s ignores %s", currency, msg.MESSAGE_ID)
        fault = self.faults.fire(
            "outage", pvp_id=_pvp_of(msg), message_type=msg.MESSAGE_ID, destination_bic=bic
        )
        if fault is not None:
            raise SimulatedOutage(f"fault {fault.id}: simulated {currency} down at {msg.id}")
        to = self.connector_bic
        return [(a, build(a, header_for(a, from_bic=bic, to_bic=to))) for a in answers]

    def _move(
        self, conn: Connection, currency: str, account: str, *, available: int = 0, held: int = 0
    ) -> Any:
        """Add to an account's funds (its ``rowcount``: 1, or 0 if there is no such account,
        read on SQLite only: in a PostgreSQL write transaction the move is held back and
        sent, summed with the transaction's others, right before its COMMIT)."""
        writes = pgtx.writes_of(conn)
        if writes is not None:
            writes.move(currency, account, available, held)
            return None
        params = {"k_currency": currency, "k_account": account, "d_available": available}
        return run(conn, simstore.MOVE_SIM_FUNDS, {**params, "d_held": held})

    def _credit(self, conn: Connection, currency: str, account: str, amount: int) -> None:
        """Credit ``account``, opening it if needed: one statement when it exists, and on
        PostgreSQL always (an upsert, held back as a move is)."""
        opened = {"currency": currency, "account": account, "available": amount, "held": 0}
        if conn.dialect.name != "sqlite":
            writes = pgtx.writes_of(conn)
            if writes is not None:
                writes.credit(currency, account, amount)
            else:
                run(conn, simstore.CREDIT_SIM_ACCOUNT, opened)
        elif not self._move(conn, currency, account, available=amount).rowcount:
            run(conn, simstore.INSERT_SIM_ACCOUNT, opened)

    def _insert_lock(self, conn: Connection, row: SimLockRow) -> None:
        writes = pgtx.writes_of(conn)
        if writes is None:
            simstore.insert_sim_lock(conn, row)
        else:
            writes.insert_sim_lock(simstore.sim_lock_values(row))

    def _set_lock_state(self, conn: Connection, uetr: str, state: SimLockState) -> None:
        writes = pgtx.writes_of(conn)
        if writes is None:
            run(conn, simstore.SET_SIM_LOCK_STATE, {"k_uetr": uetr, "state": state})
        else:
            writes.set_sim_lock_state(uetr, state)

    def _status_of(self, row: SimLockRow | None) -> tuple[str, str | None]:
        if row is None:
            return "RJCT", "NARR"
        if row.state is SimLockState.LOCKED:
            return "ACSP", None
        if row.state is SimLockState.COMMITTED:
            return "ACSC", None
        if row.state is SimLockState.REJECTED:
            return "RJCT", row.reason or "NARR"
        return "RJCT", "DS02"  # released, or cancelled before any pacs.009

    def _status(self, row: SimLockRow | None, ref: OriginalRef | None = None) -> TransactionStatus:
        status, reason = self._status_of(row)
        if ref is not None:
            original = ref
        else:
            assert row is not None
            original = OriginalRef(
                msg_id=row.msg_id,
                msg_name_id=PACS009,
                end_to_end_id=row.end_to_end_id,
                uetr=row.uetr,
            )
        return TransactionStatus(
            original=original,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            accepted=datetime.now(UTC) if status in ("ACSP", "ACSC") else None,
        )

    def _pacs002(self, statuses: list[TransactionStatus]) -> Pacs002:
        return Pacs002(msg_id=new_id(), created=datetime.now(UTC), transactions=tuple(statuses))

    def _on_pacs009(self, conn: Connection, currency: str, msg: Pacs009) -> Pacs002:
        out: list[TransactionStatus] = []
        txs = msg.transactions
        reads = _Reads(conn, currency, [tx.uetr for tx in txs], [tx.debtor_account for tx in txs])
        for tx in txs:
            row = reads.lock(tx.uetr)
            if row is None:
                row = self._lock(conn, currency, msg.msg_id, tx, reads)
                if row.reason is not None:
                    log.info("simulated %s rejects %s: %s", currency, tx.uetr, row.reason)
            out.append(self._status(row))
        return self._pacs002(out)

    def _lock(
        self, conn: Connection, currency: str, msg_id: str, tx: CreditTransfer, reads: _Reads
    ) -> SimLockRow:
        """Lock (or reject) a leg; returns the ``sim_locks`` row written."""
        pvp_id = tx.pvp.pvp_id if tx.pvp is not None else None
        reason: str | None = None
        fault = self.faults.fire(
            "reject", pvp_id=pvp_id, message_type=PACS009, destination_bic=self.banks[currency]
        )
        debtor = reads.account(tx.debtor_account)
        if fault is not None:
            reason = fault.reason
        elif tx.amount.currency != currency:
            reason = "AM11"
        elif debtor is None:
            reason = "AC01"
        elif debtor.available < tx.amount.minor:
            reason = "AM04"
        row = SimLockRow(
            uetr=tx.uetr,
            currency=currency,
            pvp_id=pvp_id,
            msg_id=msg_id,
            end_to_end_id=tx.end_to_end_id,
            debtor_account=tx.debtor_account,
            creditor_account=tx.creditor_account,
            amount=tx.amount.minor,
            condition=tx.pvp.condition if tx.pvp is not None else None,
            state=SimLockState.REJECTED if reason else SimLockState.LOCKED,
            reason=reason,
        )
        self._insert_lock(conn, row)
        reads.locked(row)
        if reason is None:
            self._move(
                conn, currency, tx.debtor_account, available=-tx.amount.minor, held=tx.amount.minor
            )
            reads.held(tx.debtor_account, tx.amount.minor)
        return row

    def _on_pacs002(self, conn: Connection, currency: str, msg: Pacs002) -> Pacs002:
        out: list[TransactionStatus] = []
        reads = _Reads(conn, currency, [tx.original.uetr for tx in msg.transactions])
        for tx in msg.transactions:
            row = reads.lock(tx.original.uetr)
            flfmt = tx.pvp.fulfilment if tx.pvp is not None else None
            if row is not None and row.state is SimLockState.LOCKED and flfmt is not None:
                if hashlib.sha256(bytes.fromhex(flfmt)).hexdigest() != row.condition:
                    out.append(
                        TransactionStatus(original=tx.original, status="RJCT", reason="CH16")
                    )
                    continue
                self._move(conn, currency, row.debtor_account, held=-row.amount)
                self._credit(conn, currency, row.creditor_account, row.amount)
                row = replace(row, state=SimLockState.COMMITTED)
                self._set_lock_state(conn, row.uetr, row.state)
                reads.locked(row)
            out.append(self._status(row, None if row is not None else tx.original))
        return self._pacs002(out)

    def _on_camt056(self, conn: Connection, currency: str, bic: str, msg: Camt056) -> list[Camt029]:
        answers: list[Camt029] = []
        resolutions: list[CancellationResolution] = []
        reads = _Reads(conn, currency, [tx.original.uetr for tx in msg.transactions])
        for tx in msg.transactions:
            row = reads.lock(tx.original.uetr)
            if row is None:
                tombstone = SimLockRow(
                    uetr=tx.original.uetr,
                    currency=currency,
                    pvp_id=None,
                    msg_id=tx.original.msg_id,
                    end_to_end_id=tx.original.end_to_end_id,
                    debtor_account="-",
                    creditor_account="-",
                    amount=0,
                    condition=None,
                    state=SimLockState.CANCELLED,
                    reason=None,
                )
                self._insert_lock(conn, tombstone)
                reads.locked(tombstone)
            elif row.state is SimLockState.LOCKED:
                self._move(
                    conn, currency, row.debtor_account, held=-row.amount, available=row.amount
                )
                released = SimLockState.RELEASED
                self._set_lock_state(conn, row.uetr, released)
                reads.locked(replace(row, state=released))
            refused = row is not None and row.state is SimLockState.COMMITTED
            resolutions.append(
                CancellationResolution(
                    original=tx.original,
                    status="RJCR" if refused else "ACCR",
                    reason="ARDT" if refused else None,
                )
            )
        # One camt.029 per confirmation (CNCL / RJCR), each answering all its transactions.
        for confirmation, status in (("CNCL", "ACCR"), ("RJCR", "RJCR")):
            group = tuple(r for r in resolutions if r.status == status)
            if group:
                answers.append(
                    Camt029(
                        assignment_id=new_id(),
                        assigner_bic=bic,
                        assignee_bic=self.connector_bic,
                        created=datetime.now(UTC),
                        confirmation=confirmation,  # type: ignore[arg-type]
                        transactions=group,
                    )
                )
        return answers

    def _on_pacs028(self, conn: Connection, currency: str, msg: Pacs028) -> Pacs002:
        out = []
        reads = _Reads(conn, currency, [tx.original.uetr for tx in msg.transactions])
        for tx in msg.transactions:
            row = reads.lock(tx.original.uetr)
            out.append(self._status(row, None if row is not None else tx.original))
        return self._pacs002(out)


__all__ = ["SimulatedNetworks", "SimulatedOutage", "new_id"]
