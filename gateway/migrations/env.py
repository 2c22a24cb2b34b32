"""Alembic environment: runs on the engine the gateway hands it (see ``gateway.db.upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import gateway.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from gateway.db import compared_with_models

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=compared_with_models,
    )
    context.run_migrations()
