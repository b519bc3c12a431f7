"""Schema migrations: Alembic driven from Python, with revisions that apply the files in ``sql/``.

Alembic's version table is ``colpg.alembic_version``, so colpg's migrations can live in
an application's database beside the application's own Alembic history.
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from colpg import db
from colpg.distribute import citus_state
from colpg.errors import SchemaError
from colpg.orm import SCHEMA
from colpg.resources import data_path, read_sql, statements

__all__ = [
    "VERSION_TABLE",
    "alembic_config",
    "check_pgvector",
    "current_revision",
    "downgrade",
    "execute_sql_file",
    "head_revision",
    "upgrade",
]

VERSION_TABLE = "alembic_version"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration for colpg's migrations on ``url`` (default :func:`colpg.db.database_url`)."""
    config = Config()
    config.set_main_option("script_location", str(data_path("migrations")))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision shipped with this colpg."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("colpg ships no migrations; reinstall colpg")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, or None when colpg was never installed there."""
    migration_context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, "version_table_schema": SCHEMA})
    return migration_context.get_current_revision()


def check_pgvector(conn: psycopg.Connection[Any]) -> None:
    """Fail with a clear message unless the server offers pgvector >= 0.7."""
    info = db.server_info(conn)
    version = info.pgvector_installed or info.pgvector_available
    if version is None:
        raise SchemaError(
            f"the PostgreSQL server at {info.where} has no pgvector extension; install pgvector >= 0.7 "
            "(for example the pgvector/pgvector Docker image) or unset COLPG_DATABASE_URL to use the embedded server"
        )
    if db.parse_version(version) < db.MIN_PGVECTOR:
        minimum = ".".join(map(str, db.MIN_PGVECTOR))
        raise SchemaError(f"colpg needs pgvector >= {minimum}; the server at {info.where} has {version}")


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating pgvector and the colpg schema)."""
    url = url or db.database_url()
    with db.connect(url, vector_types=False) as conn:
        check_pgvector(conn)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Take the database at ``url`` back to ``revision``; ``base`` removes colpg's tables."""
    url = url or db.database_url()
    db.connect(url, vector_types=False).close()
    command.downgrade(alembic_config(url), revision)


def execute_sql_file(filename: str) -> None:
    """Run ``sql/<filename>`` inside the current migration.

    Online, its statements go to psycopg one by one (``$$`` bodies and ``%`` are fine); offline (``alembic upgrade --sql``) it is written to the script.
    """
    sql = read_sql(filename)
    if context.is_offline_mode():
        op.execute(sql)
        return
    driver_connection = op.get_bind().connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection)  # env.py connects through psycopg
    installed, _ = citus_state(driver_connection)
    if installed:
        for setting in statements(read_sql("queries/citus_migration_settings.sql")):
            driver_connection.execute(setting.encode())
    for statement in statements(sql):  # one at a time: Citus forwards some DDL to its workers as given
        driver_connection.execute(statement.encode())  # bytes: a file is not a LiteralString, and is sent as is
