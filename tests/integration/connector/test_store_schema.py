"""The connector's schema is created, and brought up to date, at every start."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from gateway.connector import schema, store


def test_a_decision_sent_before_redelivery_was_scheduled_is_due_after_a_restart(
    tmp_path: Path,
) -> None:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'connector.db'}")
    schema.create_schema(engine)
    leg = {
        "pvp_id": "P1",
        "uetr": "00000000-0000-4000-8000-000000000001",
        "network_bic": "NBRKKZKXXXX",
        "currency": "KZT",
        "amount": 100,
        "debtor_bic": "NBRKKZKXXXX",
        "debtor_account": "a",
        "creditor_bic": "NBRKKZKXXXX",
        "creditor_account": "b",
        "end_to_end_id": "e2e",
        "pacs009_msg_id": "m1",
        "status": "locked",
        "acknowledged": False,
    }
    with engine.begin() as conn:
        conn.execute(
            schema.pvps.insert(),
            {
                "id": "P1",
                "deadline": 10**13,
                "condition": "c" * 64,
                "secret": "s" * 64,
                "state": "committed",
                "created_at": 1,
            },
        )
        # As a database from before ``redeliver_at`` holds it: sent, no redelivery time.
        conn.execute(schema.legs.insert(), {**leg, "leg": "DT", "decision_sent_at": 5_000})
        conn.execute(
            schema.legs.insert(),
            {**leg, "leg": "FX", "uetr": leg["uetr"][:-1] + "2", "status": "instructed"},
        )

    schema.create_schema(engine)  # the restart

    with engine.connect() as conn:
        rows = {r.leg: r.redeliver_at for r in conn.execute(sa.select(schema.legs))}
        assert rows == {"DT": 5_000, "FX": None}  # a leg without a decision stays unscheduled
        stale = conn.execute(store.SELECT_STALE_LEGS, {"now": 6_000, "limit": 10}).all()
        assert [(r.pvp_id, r.leg) for r in stale] == [("P1", "DT")]
