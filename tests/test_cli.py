"""The ``colpg`` command line on a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from colpg import db, embedded, migrate
from colpg.cli import app

runner = CliRunner()


def test_upgrade_then_status_reports_versions_and_head(database_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    head = migrate.head_revision()
    assert f"revision {head} (head {head}, up to date)" in result.output

    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 0, result.output
    assert "PostgreSQL 18." in result.output
    assert "pgvector  0.8." in result.output and "installed" in result.output
    assert f"colpg revision {head} (head {head}, up to date)" in result.output
    assert "no (COLPG_DATABASE_URL)" in result.output


def test_status_before_upgrade_says_what_to_do(database_url: str) -> None:
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 0, result.output
    assert "not installed (" in result.output and "available)" in result.output
    assert "run `colpg db upgrade`" in result.output


def test_downgrade_to_base(migrated_url: str) -> None:
    result = runner.invoke(app, ["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert "not installed" in result.output


def test_url_hides_a_password_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.DATABASE_URL_ENV, "postgresql://alice:secret@db.example:5432/search")
    assert runner.invoke(app, ["db", "url"]).output.strip() == "postgresql://alice:***@db.example:5432/search"
    shown = runner.invoke(app, ["db", "url", "--show-password"]).output.strip()
    assert shown == "postgresql://alice:secret@db.example:5432/search"


def test_url_of_the_embedded_server_works_with_libpq(
    server: embedded.EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(db.DATABASE_URL_ENV, raising=False)
    result = runner.invoke(app, ["db", "url"])
    assert result.exit_code == 0, result.output
    assert "***" not in result.output  # no password to hide: the URL is shown as libpq needs it
    with db.connect(result.output.strip(), vector_types=False) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


@pytest.mark.parametrize("command", [["db", "status"], ["db", "upgrade"], ["db", "url"]])
def test_unreachable_url_exits_non_zero_with_a_message(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv(db.DATABASE_URL_ENV, "postgresql://postgres@127.0.0.1:1/nowhere")
    result = runner.invoke(app, command)
    if command == ["db", "url"]:  # printing the URL needs no server
        assert result.exit_code == 0
        return
    assert result.exit_code == 1
    assert "error: cannot connect to PostgreSQL at 127.0.0.1 port 1 database nowhere" in result.output
    assert "Traceback" not in result.output


def test_server_that_cannot_start_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.DATABASE_URL_ENV, raising=False)
    blocker = tmp_path / "pgdata"
    blocker.write_text("")
    monkeypatch.setenv(embedded.DATA_DIR_ENV, str(blocker))
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 1
    assert f"error: the embedded PostgreSQL data folder {blocker} exists but is not a folder" in result.output


@pytest.fixture
def second_cluster(tmp_path: Path) -> Iterator[embedded.EmbeddedServer]:
    pgdata = tmp_path / "second" / "pgdata"
    pgdata.parent.mkdir()
    running = embedded.ensure_server(pgdata)
    yield running
    embedded.stop_server(pgdata)


def _colpg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a user would."""
    script = Path(sys.executable).with_name("colpg")
    return subprocess.run([str(script), *args], check=False, env=env, capture_output=True, text=True, timeout=120)


def test_database_url_selects_a_second_cluster(
    server: embedded.EmbeddedServer, second_cluster: embedded.EmbeddedServer
) -> None:
    """COLPG_DATABASE_URL wins over the embedded default, through the real console script."""
    env = {**os.environ, db.DATABASE_URL_ENV: second_cluster.url}
    upgraded = _colpg("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    status = _colpg("db", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert f"socket {second_cluster.pgdata}" in status.stdout
    assert "no (COLPG_DATABASE_URL)" in status.stdout
    assert "up to date" in status.stdout
    # The session's default server was not touched.
    with db.connect(server.url, vector_types=False) as conn:
        assert conn.execute("SELECT to_regclass('colpg.indexes')").fetchone() == (None,)


def test_stop_then_start_again(second_cluster: embedded.EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv(embedded.DATA_DIR_ENV, str(second_cluster.pgdata))
    result = runner.invoke(app, ["db", "stop"])
    assert result.exit_code == 0 and "stopped" in result.output
    assert "was not running" in runner.invoke(app, ["db", "stop"]).output
    restarted = runner.invoke(app, ["db", "status"])
    assert restarted.exit_code == 0, restarted.output
    assert f"data folder {second_cluster.pgdata}" in restarted.output


def test_serve_on_a_port_in_use_fails_before_starting() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "startup complete" not in result.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice@db.example/search?password=secret&sslmode=require", "postgresql://alice@db.example/search?password=%2A%2A%2A&sslmode=require"),
        ("postgresql://alice:secret@db.example/search?sslpassword=secret", "postgresql://alice:***@db.example/search?sslpassword=%2A%2A%2A"),
    ],
)
def test_url_hides_a_password_in_the_query_string(monkeypatch: pytest.MonkeyPatch, url: str, shown: str) -> None:
    monkeypatch.setenv(db.DATABASE_URL_ENV, url)
    result = runner.invoke(app, ["db", "url"])
    assert result.exit_code == 0 and result.output.strip() == shown


@pytest.mark.parametrize("url", ["alice:secret@db.example/search", "host=db.example password=secret dbname=search"])
def test_a_url_that_is_not_one_is_refused_without_its_password(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv(db.DATABASE_URL_ENV, url)
    result = runner.invoke(app, ["db", "url"])
    assert result.exit_code == 1 and "must be a URL" in result.output
    assert "secret" not in result.output
