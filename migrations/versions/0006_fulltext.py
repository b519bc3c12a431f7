"""Full-text search for hybrid search: a per-index text search configuration, a stored
generated tsvector on documents with a GIN index, and colpg.fulltext_candidates.

Rewrites colpg.documents (the stored generated column): see sql/0006_fulltext.up.sql.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0006_fulltext.up.sql")


def downgrade() -> None:
    execute_sql_file("0006_fulltext.down.sql")
