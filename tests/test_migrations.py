"""Alembic migrations on a real server: up from empty, down to empty, and models that match."""

from __future__ import annotations

import contextlib
import io
import re

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from colpg import db, migrate
from colpg.orm import SCHEMA, Base

TABLES = {"indexes", "centroids", "documents", "document_tokens", "rerank_vectors", "token_changes", "token_changes_trimmed"}


def _tables(url: str) -> set[str]:
    with db.connect(url, vector_types=False) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,)).fetchall()
    return {row[0] for row in rows}


def _extension(url: str) -> str | None:
    with db.connect(url, vector_types=False) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return row[0] if row else None


def _revision(url: str) -> str | None:
    engine = db.create_engine(url, vector_types=False, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        revision = migrate.current_revision(connection)
    engine.dispose()
    return revision


def test_upgrade_from_empty_creates_extension_and_tables(database_url: str) -> None:
    assert _revision(database_url) is None
    assert _extension(database_url) is None

    migrate.upgrade(database_url)

    assert _tables(database_url) == TABLES | {"alembic_version"}
    assert db.parse_version(_extension(database_url) or "") >= db.MIN_PGVECTOR
    assert _revision(database_url) == migrate.head_revision()


def test_downgrade_returns_to_empty_and_upgrades_again(migrated_url: str) -> None:
    migrate.downgrade(migrated_url, "base")
    assert _tables(migrated_url) == {"alembic_version"}
    assert _extension(migrated_url) is None
    assert _revision(migrated_url) is None

    migrate.upgrade(migrated_url)
    assert _tables(migrated_url) == TABLES | {"alembic_version"}


def test_downgrade_keeps_pgvector_when_the_application_uses_it(migrated_url: str) -> None:
    with db.connect(migrated_url) as conn:
        conn.execute("CREATE TABLE public.app_items (embedding vector(3))")
        conn.commit()
    migrate.downgrade(migrated_url, "base")
    assert _extension(migrated_url) is not None
    assert _tables(migrated_url) == {"alembic_version"}


def test_models_match_the_migrated_database(migrated_url: str) -> None:
    engine = db.create_engine(migrated_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parent: type_ != "schema" or name == SCHEMA,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    # Alembic's own version table is not a model.
    differences = [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert differences == []


def test_offline_sql_for_database_admins(database_url: str) -> None:
    out = io.StringIO()
    config = migrate.alembic_config(database_url)
    config.output_buffer = out
    command.upgrade(config, "head", sql=True)
    script = out.getvalue()
    assert "CREATE EXTENSION IF NOT EXISTS vector" in script
    assert "CREATE TABLE colpg.document_tokens" in script
    assert "colpg.alembic_version" in script
    assert _tables(database_url) == set()  # offline mode writes SQL, never touches the database


def test_unknown_revision_is_a_clear_alembic_error(database_url: str) -> None:
    import alembic.util

    with pytest.raises(alembic.util.CommandError, match="nope"):
        migrate.upgrade(database_url, "nope")


def test_failed_migration_leaves_nothing_behind(database_url: str) -> None:
    """A migration runs in one transaction: if it fails half-way, no table remains."""
    with db.connect(database_url, vector_types=False) as conn:
        # The colpg schema exists with a table in the way of the migration's CREATE TABLE.
        conn.execute("CREATE SCHEMA colpg")
        conn.execute("CREATE TABLE colpg.documents (x int)")
        conn.commit()
    with pytest.raises(psycopg.errors.DuplicateTable, match="already exists"):
        migrate.upgrade(database_url)
    assert _tables(database_url) == {"documents"}
    assert _extension(database_url) is None
    assert _revision(database_url) is None


def test_version_table_lives_in_colpg_schema_beside_application_history(migrated_url: str) -> None:
    with db.connect(migrated_url, vector_types=False) as conn:
        # An application's own Alembic history in public is left alone.
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('app_42')")
        conn.commit()
    migrate.downgrade(migrated_url, "base")
    migrate.upgrade(migrated_url)
    with db.connect(migrated_url, vector_types=False) as conn, contextlib.closing(conn.cursor()) as cur:
        cur.execute("SELECT version_num FROM public.alembic_version")
        assert cur.fetchall() == [("app_42",)]


def test_upgrade_0002_copies_each_token_row_its_index(database_url: str) -> None:
    """Rows written under schema v1 get document_tokens.index_id from their document."""
    migrate.upgrade(database_url, "0001")
    with db.connect(database_url) as conn:
        conn.execute("INSERT INTO colpg.indexes (name, model, dim, nbits) VALUES ('a', 'm', 2, 2), ('b', 'm', 2, 2)")
        conn.execute(
            "INSERT INTO colpg.documents (id, index_id, external_id) VALUES (10, 1, 'x'), (11, 2, 'y')"
        )
        conn.execute("INSERT INTO colpg.document_tokens VALUES (10, 1, '{0}', '\\x00'), (11, 2, '{0,1}', '\\x0000')")
        conn.commit()
    migrate.upgrade(database_url)
    with db.connect(database_url) as conn:
        rows = conn.execute("SELECT document_id, index_id FROM colpg.document_tokens ORDER BY 1").fetchall()
        assert rows == [(10, 1), (11, 2)]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("UPDATE colpg.document_tokens SET index_id = 2 WHERE document_id = 10")
        conn.rollback()
    migrate.downgrade(database_url, "0001")
    with db.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM colpg.document_tokens").fetchone() == (2,)


def test_constants_match_the_sql_checks(migrated_url: str) -> None:
    """colpg.constants and the CHECK constraints of the migrations state the same facts."""
    from colpg.constants import INDEX_NAME_PATTERN, NBITS

    with db.connect(migrated_url) as conn:
        checks = dict(conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conname IN ('indexes_nbits_check', 'indexes_name_check')"
        ).fetchall())
    assert f"'{INDEX_NAME_PATTERN}'" in checks["indexes_name_check"]
    numbers = sorted(int(n) for n in re.findall(r"\d+", checks["indexes_nbits_check"]))
    assert tuple(numbers) == NBITS
