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


def test_citus_profile_has_a_coordinator_and_two_workers_with_pgvector_and_registers_them(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = ["citus-coordinator", "citus-worker-1", "citus-worker-2"]
    assert all("profiles" not in services[name] for name in ("postgres", "colpg"))  # `docker compose up` stays as it was
    for name in [*nodes, "citus-register"]:
        assert services[name]["profiles"] == ["citus"]
        assert services[name]["build"]["dockerfile"] == "Dockerfile.citus"
    for name in nodes:
        assert "pg_isready" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["volumes"][0].split(":")[0] in compose["volumes"]
        assert services[name]["environment"]["PGPASSWORD"] == services[name]["environment"]["POSTGRES_PASSWORD"]

    register = services["citus-register"]
    assert {name: dependency["condition"] for name, dependency in register["depends_on"].items()} == dict.fromkeys(nodes, "service_healthy")
    statements = " ".join(register["command"])
    assert "citus_set_coordinator_host('citus-coordinator', 5432)" in statements
    assert "citus_add_node" in statements and "'citus-worker-1', 'citus-worker-2'" in statements

    dockerfile = (repo_root / "Dockerfile.citus").read_text()
    assert "FROM ${CITUS_IMAGE}" in dockerfile and "ARG CITUS_IMAGE=citusdata/citus:" in dockerfile
    assert "postgresql-${PG_MAJOR}-pgvector" in dockerfile
    assert "CREATE EXTENSION IF NOT EXISTS vector" in dockerfile


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("profile", [[], ["--profile", "citus"]], ids=["default", "citus"])
def test_docker_compose_config_validates(repo_root: Path, profile: list[str]) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose client on this machine")
    result = subprocess.run([*command, *profile, "config", "--quiet"], cwd=repo_root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
