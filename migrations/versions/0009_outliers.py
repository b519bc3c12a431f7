"""Tokens far from their centroid kept at int8 beside their 2-bit residuals (colpg.outliers).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file("0009_outliers.up.sql")


def downgrade() -> None:
    execute_sql_file("0009_outliers.down.sql")
