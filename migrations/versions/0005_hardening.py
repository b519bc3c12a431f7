"""The SQL surface hardened: safe SECURITY DEFINER functions with limits, query_cells internal,
writer column privileges and sequence-only ids, stale tokens dropped on a text change, and the
colpg_service and colpg_worker roles.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0005_hardening.up.sql")


def downgrade() -> None:
    execute_sql_file("0005_hardening.down.sql")
