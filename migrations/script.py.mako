"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from colpg.migrate import execute_sql_file

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    execute_sql_file("${up_revision}_CHANGE.up.sql")


def downgrade() -> None:
    execute_sql_file("${up_revision}_CHANGE.down.sql")
