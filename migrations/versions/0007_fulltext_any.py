"""The full-text stage matches any word of a query or every word: colpg.fulltext_query, and
colpg.fulltext_candidates with a ``match`` argument (default 'any').

Replaces functions only; no table is rewritten: see sql/0007_fulltext_any.up.sql.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0007_fulltext_any.up.sql")


def downgrade() -> None:
    execute_sql_file("0007_fulltext_any.down.sql")
