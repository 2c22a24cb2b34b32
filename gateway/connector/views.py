"""What the API shows of PvPs: a PvP with its decision and legs, and its message log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from gateway.connector import store
from gateway.connector.messages import iso
from gateway.connector.model import COMPLETED
from gateway.errors import NotFound
from gateway.sqlite.fastsql import run

LEG_VIEW_FIELDS = (
    "leg",
    "uetr",
    "network_bic",
    "currency",
    "amount",
    "debtor_bic",
    "debtor_account",
    "creditor_bic",
    "creditor_account",
    "end_to_end_id",
    "status",
    "reason",
    "acknowledged",
    "locked_at",
)


def pvp_view(
    pvp: Mapping[Any, Any],
    decision: Mapping[str, Any] | None,
    leg_rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A PvP as ``GET /v1/pvp/{pvp_id}`` shows it, from its rows."""
    views = []
    for leg in leg_rows:
        view = {name: leg[name] for name in LEG_VIEW_FIELDS}
        view["locked_at"] = iso(leg["locked_at"])
        views.append(view)
    return {
        "pvp_id": pvp["id"],
        "state": pvp["state"],
        "deadline": iso(pvp["deadline"]),
        "condition": pvp["condition"],
        "decision": None
        if decision is None
        else {
            "decision": decision["decision"],
            "reason": decision["reason"],
            "detail": decision["detail"],
            "decided_at": iso(decision["decided_at"]),
        },
        "completed": pvp["state"] in COMPLETED,
        "legs": views,
    }


def read_pvp(engine: Engine, pvp_id: str) -> dict[str, Any]:
    with store.reader(engine) as conn:
        rows = run(conn, store.SELECT_PVP_VIEW, {"pvp_id": pvp_id}).all()
    if not rows:
        raise NotFound(f"no PvP {pvp_id}")
    first = rows[0]
    decision = (
        None
        if first.decision is None
        else {
            "decision": first.decision,
            "reason": first.decision_reason,
            "detail": first.decision_detail,
            "decided_at": first.decided_at,
        }
    )
    leg_rows = [
        {name: r._mapping["leg_" + name] for name in LEG_VIEW_FIELDS}
        for r in rows
        if r.leg_leg is not None
    ]
    return pvp_view(first._mapping, decision, leg_rows)


def read_messages(engine: Engine, pvp_id: str) -> list[dict[str, Any]]:
    with store.reader(engine) as conn:
        if run(conn, store.SELECT_PVP_ID, {"pvp_id": pvp_id}).first() is None:
            raise NotFound(f"no PvP {pvp_id}")
        rows = run(conn, store.SELECT_MESSAGES_OF, {"pvp_id": pvp_id}).all()
    return [
        {
            "seq": i,
            "direction": r.direction,
            "peer_bic": r.peer_bic,
            "message": r.msg_def_id,
            "msg_id": r.msg_id,
            "sha256": r.sha256,
            "at": iso(r.at),
            "xml": r.raw.decode("utf-8"),
        }
        for i, r in enumerate(rows, 1)
    ]


__all__ = ["LEG_VIEW_FIELDS", "pvp_view", "read_messages", "read_pvp"]
