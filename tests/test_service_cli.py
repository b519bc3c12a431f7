"""``colpg serve``: no service open to anyone unless told so, and a loud warning when it runs as a superuser."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from colpg import db
from colpg.auth import superuser_warning
from colpg.cli import app

runner = CliRunner()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org"])
def test_no_auth_is_refused_beyond_loopback(database_url: str, host: str) -> None:
    result = runner.invoke(app, ["serve", "--no-auth", "--host", host])
    assert result.exit_code == 1
    assert "loopback" in result.output and host in result.output


def test_serve_without_keys_is_refused(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLPG_API_KEYS", raising=False)
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 1
    assert "COLPG_API_KEYS" in result.output and "--no-auth" in result.output


def test_superuser_is_warned_about(migrated_url: str) -> None:
    warning = superuser_warning(migrated_url)
    assert warning is not None and "superuser" in warning and "colpg_service" in warning
    role = f"t_role_{uuid.uuid4().hex[:8]}"
    with db.connect(migrated_url, autocommit=True, vector_types=False) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')  # type: ignore[arg-type]  # generated name
    try:
        assert superuser_warning(make_url(migrated_url).set(username=role).render_as_string(hide_password=False)) is None
    finally:
        with db.connect(migrated_url, autocommit=True, vector_types=False) as admin:
            admin.execute(f'DROP ROLE "{role}"')  # type: ignore[arg-type]
