"""Batched mode (``batch_max`` > 1): legs and decisions wait in the store to be grouped into
one message per network: queued legs -> one multi-transaction pacs.009, queued decisions ->
one pacs.002 (COMMIT) or camt.056 (ABORT). The store is read and written through the
handlers' repository (:class:`~gateway.connector.repository.Repository`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from gateway.config import ConnectorSettings
from gateway.connector.handlers import Handlers
from gateway.connector.messages import credit_transfer, decision_message, new_id
from gateway.connector.model import DecisionKind
from gateway.connector.outbox import Work
from gateway.connector.rows import QueuedDecision, QueuedLeg
from gateway.connector.store import now_ms
from gateway.iso20022 import Pacs009

_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def flush(
    cfg: ConnectorSettings, handlers: Handlers, work: Work, *, force: bool
) -> tuple[int, bool]:
    """Messages for what waits, once ``batch_max`` legs wait for a network or the oldest waited
    ``batch_linger_ms`` (or ``force``): (messages made, whether some were left waiting)."""
    made = 0
    left = False
    cutoff = now_ms() - cfg.batch_linger_ms
    limit = cfg.batch_max * 20
    queued = handlers.repo.queued_legs(work, limit)
    groups: dict[str, list[QueuedLeg]] = {}
    for q in queued:
        groups.setdefault(q.leg.network_bic, []).append(q)
    for dest, group in groups.items():
        for chunk in _chunks(group, cfg.batch_max):
            full = len(chunk) == cfg.batch_max
            if not (force or full or chunk[0].created_at <= cutoff):
                left = True
                continue
            msg = Pacs009(
                msg_id=new_id(),
                created=datetime.now(UTC),
                transactions=tuple(credit_transfer(q.pvp, q.leg) for q in chunk),
            )
            # Instructed before the message is written: a simulated bank may answer it there
            # and then (``Handlers.write_outgoing``).
            instructed = [
                {
                    "k_pvp": q.leg.pvp_id,
                    "k_leg": q.leg.leg,
                    "status": q.leg.as_leg().instruct().status,
                    "pacs009_msg_id": msg.msg_id,
                }
                for q in chunk
            ]
            handlers.repo.update_legs(work, instructed)
            handlers.enqueue(work, [q.pvp.id for q in chunk], dest, msg)
            made += 1
    made += _flush_decisions(cfg, handlers, work)
    return made, left or len(queued) == limit


def _flush_decisions(cfg: ConnectorSettings, handlers: Handlers, work: Work) -> int:
    queued = handlers.repo.queued_decisions(work, cfg.batch_max * 20)
    groups: dict[tuple[str, DecisionKind], list[QueuedDecision]] = {}
    for q in queued:
        groups.setdefault((q.leg.network_bic, q.decision), []).append(q)
    made = 0
    for (dest, decision), group in groups.items():
        for chunk in _chunks(group, cfg.batch_max):
            items = [(q.pvp, q.leg, q.reason) for q in chunk]
            msg = decision_message(cfg.bic, dest, decision, items)
            handlers.enqueue(work, [q.pvp.id for q in chunk], dest, msg)
            made += 1
    if queued:
        sent = [
            {"k_pvp": q.leg.pvp_id, "k_leg": q.leg.leg, "decision_queued": False} for q in queued
        ]
        handlers.repo.update_legs(work, sent)
    return made


__all__ = ["flush"]
