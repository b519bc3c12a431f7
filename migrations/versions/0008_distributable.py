"""Ready for a Citus cluster: a trim counter for searchers there, and a trim function Citus can plan.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0008_distributable.up.sql")


def downgrade() -> None:
    execute_sql_file("0008_distributable.down.sql")
