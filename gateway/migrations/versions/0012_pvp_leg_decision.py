"""PvP legs: the decision the gateway applied to each (COMMIT, ABORT or RJCT), what caused it
and when. Legs already final get the decision their state implies; the cause where the state
and who resolved it tell it, else left empty.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# state -> (decision, cause) for legs resolved by the connector before this revision; a
# release's cause (camt.056 or the connector's RJCT) was not recorded.
_BACKFILL = (
    ("settled", "COMMIT", "fulfilment"),
    ("released", "ABORT", None),
    ("cancelled", "ABORT", "camt.056"),
    ("rejected", "RJCT", "refusal"),
)


def upgrade() -> None:
    with op.batch_alter_table("pvp_leg") as batch:
        batch.add_column(sa.Column("decision", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("decision_cause", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column("decided_at", gateway.db.UtcDateTime(timezone=True), nullable=True)
        )
    leg = sa.table(
        "pvp_leg",
        sa.column("state", sa.String),
        sa.column("resolved_by", sa.String),
        sa.column("decision", sa.String),
        sa.column("decision_cause", sa.String),
        sa.column("decided_at", sa.DateTime),
        sa.column("updated_at", sa.DateTime),
    )
    for state, decision, cause in _BACKFILL:
        op.execute(
            leg.update()
            .where(leg.c.state == state)
            .values(decision=decision, decision_cause=cause, decided_at=leg.c.updated_at)
        )
    op.execute(
        leg.update()
        .where(leg.c.state.in_(("settled", "released")), leg.c.resolved_by.like("operator:%"))
        .values(decision_cause="operator")
    )


def downgrade() -> None:
    with op.batch_alter_table("pvp_leg") as batch:
        batch.drop_column("decided_at")
        batch.drop_column("decision_cause")
        batch.drop_column("decision")
