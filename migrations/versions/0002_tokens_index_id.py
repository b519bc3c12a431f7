"""document_tokens.index_id: candidate lookup without a join to documents.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0002_tokens_index_id.up.sql")


def downgrade() -> None:
    execute_sql_file("0002_tokens_index_id.down.sql")
