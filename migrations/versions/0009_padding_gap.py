"""The query padding direction and each document's first-stage gap along it (colpg.codec.ResidualCodec.padding_gaps).

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
    execute_sql_file("0009_padding_gap.up.sql")


def downgrade() -> None:
    execute_sql_file("0009_padding_gap.down.sql")
