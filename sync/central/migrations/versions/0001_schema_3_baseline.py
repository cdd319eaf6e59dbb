"""Baseline: schema 3, as ``central`` made it before Alembic (issue 14).

Revision ID: 0001_schema_3
Revises:
Create Date: 2026-11-28

The DDL is frozen in :mod:`sync.central.migrations.schema3`, per dialect.
"""

from __future__ import annotations

from alembic import op

from sync.central.migrations import schema3

revision = "0001_schema_3"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema3.create(op.get_bind())


def downgrade() -> None:
    # Undoing the baseline would drop every testimony's record: not a migration step.
    raise RuntimeError("the baseline schema is not downgraded: drop the database instead")
