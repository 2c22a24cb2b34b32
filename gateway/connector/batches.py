"""Batched mode (``batch_max`` > 1): legs and decisions wait in the store to be grouped into
one message per network: queued legs -> one multi-transaction pacs.009, queued decisions ->
one pacs.002 (COMMIT) or camt.056 (ABORT)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.config import ConnectorSettings
from gateway.connector import store
from gateway.connector.handlers import Handlers
from gateway.connector.messages import PvPRef, PvPSecret, credit_transfer, decision_message, new_id
from gateway.connector.model import LegStatus
from gateway.connector.outbox import Work
from gateway.connector.store import now_ms
from gateway.iso20022 import Pacs009
from gateway.sqlite.fastsql import run


def flush(
    cfg: ConnectorSettings, handlers: Handlers, work: Work, *, force: bool
) -> tuple[int, bool]:
    """Messages for what waits, once ``batch_max`` legs wait for a network or the oldest waited
    ``batch_linger_ms`` (or ``force``): (messages made, whether some were left waiting)."""
    made = 0
    left = False
    cutoff = now_ms() - cfg.batch_linger_ms
    limit = cfg.batch_max * 20
    rows = run(work.conn, store.SELECT_QUEUED_LEGS, {"limit": limit}).all()
    groups: dict[str, list[Any]] = {}
    for r in rows:
        groups.setdefault(r.network_bic, []).append(r)
    for dest, group in groups.items():
        for i in range(0, len(group), cfg.batch_max):
            chunk = group[i : i + cfg.batch_max]
            full = len(chunk) == cfg.batch_max
            if not (force or full or chunk[0].created_at <= cutoff):
                left = True
                continue
            msg = Pacs009(
                msg_id=new_id(),
                created=datetime.now(UTC),
                transactions=tuple(
                    credit_transfer(PvPRef(r.pvp_id, r.deadline, r.condition), r) for r in chunk
                ),
            )
            # Instructed before the message is written: a simulated bank may answer it there
            # and then (``Handlers.write_outgoing``).
            instructed = [
                {
                    "k_pvp": r.pvp_id,
                    "k_leg": r.leg,
                    "status": LegStatus.INSTRUCTED.value,
                    "pacs009_msg_id": msg.msg_id,
                }
                for r in chunk
            ]
            run(work.conn, store.UPDATE_LEG, instructed)
            handlers.enqueue(work, [r.pvp_id for r in chunk], dest, msg)
            made += 1
    made += _flush_decisions(cfg, handlers, work)
    return made, left or len(rows) == limit


def _flush_decisions(cfg: ConnectorSettings, handlers: Handlers, work: Work) -> int:
    rows = run(work.conn, store.SELECT_QUEUED_DECISIONS, {"limit": cfg.batch_max * 20}).all()
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        groups.setdefault((r.network_bic, r.decision), []).append(r)
    made = 0
    for (dest, decision), group in groups.items():
        for i in range(0, len(group), cfg.batch_max):
            chunk = group[i : i + cfg.batch_max]
            items = [
                (PvPSecret(r.pvp_id, r.deadline, r.condition, r.secret), r, r.decision_reason)
                for r in chunk
            ]
            msg = decision_message(cfg.bic, dest, decision, items)
            handlers.enqueue(work, [r.pvp_id for r in chunk], dest, msg)
            made += 1
    if rows:
        sent = [{"k_pvp": r.pvp_id, "k_leg": r.leg, "decision_queued": False} for r in rows]
        run(work.conn, store.UPDATE_LEG, sent)
    return made


__all__ = ["flush"]
