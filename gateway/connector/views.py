"""What the API shows of PvPs: a PvP with its decision and legs, and its message log, from the
store's typed rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

from gateway.connector import store
from gateway.connector.messages import iso
from gateway.connector.model import Decision
from gateway.connector.rows import LegRow, MessageRow, PvPRow
from gateway.errors import NotFound


def leg_view(leg: LegRow) -> dict[str, Any]:
    return {
        "leg": leg.leg,
        "uetr": leg.uetr,
        "network_bic": leg.network_bic,
        "currency": leg.currency,
        "amount": leg.amount,
        "debtor_bic": leg.debtor_bic,
        "debtor_account": leg.debtor_account,
        "creditor_bic": leg.creditor_bic,
        "creditor_account": leg.creditor_account,
        "end_to_end_id": leg.end_to_end_id,
        "status": leg.status.value,
        "reason": leg.reason,
        "acknowledged": leg.acknowledged,
        "locked_at": iso(leg.locked_at),
    }


def decision_view(decision: Decision) -> dict[str, Any]:
    return {
        "decision": decision.kind.value,
        "reason": decision.reason,
        "detail": decision.detail,
        "decided_at": iso(decision.decided_at),
    }


def pvp_view(pvp: PvPRow, decision: Decision | None, legs: Sequence[LegRow]) -> dict[str, Any]:
    """A PvP as ``GET /v1/pvp/{pvp_id}`` shows it (and ``POST /v1/trades`` answers it)."""
    current = pvp.as_pvp()
    return {
        "pvp_id": pvp.id,
        "state": pvp.state.value,
        "deadline": iso(pvp.deadline),
        "condition": pvp.condition,
        "decision": None if decision is None else decision_view(decision),
        "completed": current.completed,
        "legs": [leg_view(leg) for leg in legs],
    }


def message_view(seq: int, message: MessageRow) -> dict[str, Any]:
    return {
        "seq": seq,
        "direction": message.direction,
        "peer_bic": message.peer_bic,
        "message": message.msg_def_id,
        "msg_id": message.msg_id,
        "sha256": message.sha256,
        "at": iso(message.at),
        "xml": message.raw.decode("utf-8"),
    }


def read_pvp(engine: Engine, pvp_id: str) -> dict[str, Any]:
    with store.reader(engine) as conn:
        record = store.read_pvp_record(conn, pvp_id)
    if record is None:
        raise NotFound(f"no PvP {pvp_id}")
    return pvp_view(*record)


def read_messages(engine: Engine, pvp_id: str) -> list[dict[str, Any]]:
    with store.reader(engine) as conn:
        if not store.pvp_exists(conn, pvp_id):
            raise NotFound(f"no PvP {pvp_id}")
        log = store.read_message_log(conn, pvp_id)
    return [message_view(seq, message) for seq, message in enumerate(log, 1)]


__all__ = ["decision_view", "leg_view", "message_view", "pvp_view", "read_messages", "read_pvp"]
