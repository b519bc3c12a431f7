"""colpg from SQL: ingest queue (status, NOTIFY), search functions, health views, reader and writer roles.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0003_sql_api.up.sql")


def downgrade() -> None:
    execute_sql_file("0003_sql_api.down.sql")
