"""colpg schema v1: pgvector, index catalogue, centroids, documents, token codes and residuals.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

from colpg.migrate import execute_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    execute_sql_file("0001_schema.up.sql")


def downgrade() -> None:
    execute_sql_file("0001_schema.down.sql")
