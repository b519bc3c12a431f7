"""With its database down the service answers JSON 503 with Retry-After, and recovers by itself when it is back.

The test runs its own embedded server (the session's stays up for the other tests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_support import KEYS, READ_KEY, bearer, running

from colpg import embedded, migrate
from colpg.encoder import Encoder
from colpg.indexer import IndexConfig, Indexer
from colpg.service import create_app


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    pgdata = tmp_path / "pgdata"
    server = embedded.ensure_server(pgdata)
    try:
        yield pgdata, server.url
    finally:
        embedded.stop_server(pgdata)


def test_database_down_is_a_503_and_the_service_recovers(own_server: tuple[Path, str], encoder: Encoder, small_texts: list[str]) -> None:
    pgdata, url = own_server
    migrate.upgrade(url)
    Indexer(encoder, IndexConfig(kmeans_niters=2), url=url).index(
        "web", [{"id": f"d{i}", "text": t} for i, t in enumerate(small_texts[:8])]
    )
    search = {"query": "glaciers", "k": 2}
    with running(create_app(url, keys=KEYS)) as base, httpx.Client(base_url=base, timeout=30, headers=bearer(READ_KEY)) as http:
        assert http.post("/indexes/web/search", json=search).status_code == 200
        embedded.stop_server(pgdata)

        started = time.monotonic()
        health = http.get("/health")
        assert time.monotonic() - started < 5
        assert health.status_code == 503 and health.headers["Retry-After"].isdigit(), health.text
        assert health.json()["status"] == "unavailable" and health.json()["database"] not in ("", "ok")
        for method, path, body in (
            ("post", "/indexes/web/search", search),  # loaded: its connection pool finds the server gone
            ("get", "/indexes/web", None),
            ("post", "/indexes/other/search", search),  # not loaded: the index cannot be read
        ):
            down = http.request(method, path, json=body)
            assert down.status_code == 503 and down.headers["Retry-After"].isdigit(), down.text
            assert "unavailable" in down.json()["detail"]

        assert embedded.ensure_server(pgdata).url == url
        assert http.get("/health").json()["status"] == "ok"
        found = http.post("/indexes/web/search", json=search)
        assert found.status_code == 200 and len(found.json()["hits"]) == 2, found.text
