"""A log of token-row changes (trigger-written), so searchers keep their resident tokens current.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0004_token_changes.up.sql")


def downgrade() -> None:
    execute_sql_file("0004_token_changes.down.sql")
