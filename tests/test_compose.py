"""docker-compose.yml and the Dockerfile: checked by the Docker client when present, by reading always."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


def test_compose_file_has_pgvector_with_healthcheck_and_colpg_service(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]

    colpg = compose["services"]["colpg"]
    assert colpg["build"] == "."
    assert colpg["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = colpg["environment"]["COLPG_DATABASE_URL"]
    env = postgres["environment"]
    assert url == f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"


def test_dockerfile_installs_what_the_package_needs(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    for path in ("colpg", "sql", "migrations", "pyproject.toml"):
        assert f"COPY {path}" in dockerfile or f" {path} " in dockerfile
    assert 'ENTRYPOINT ["colpg"]' in dockerfile


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates(repo_root: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose client on this machine")
    result = subprocess.run([*command, "config", "--quiet"], cwd=repo_root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
