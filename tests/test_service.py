"""The HTTP service against a running server (uvicorn on a free port), and schemathesis on its OpenAPI schema."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import torch
import uvicorn
from hypothesis import HealthCheck, given, settings

from colpg.encoder import Encoder
from colpg.index import IndexConfig, Indexer
from colpg.service import create_app


@pytest.fixture
def service_app(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Any:
    corpus = [{"id": f"d{i}", "text": t, "metadata": {"n": i, "even": i % 2 == 0}} for i, t in enumerate(small_texts)]
    Indexer(encoder, IndexConfig(kmeans_niters=2), url=migrated_url).index("web", corpus)
    return create_app(migrated_url)


@pytest.fixture
def http_server(service_app: Any) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(service_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


def test_search_documents_and_stats_over_http(http_server: str) -> None:
    with httpx.Client(base_url=http_server, timeout=60) as client:
        assert client.get("/health").json()["status"] == "ok"
        found = client.post("/indexes/web/search", json={"query": "glaciers and ice sheets", "k": 3, "explain": True})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["explanation"]

        even = client.post("/indexes/web/search", json={"query": "cells", "k": 5, "filter": {"even": True}}).json()["hits"]
        assert len(even) == 5 and all(h["metadata"]["even"] for h in even)

        encoded = client.post("/indexes/web/encode", json={"query": "glaciers and ice sheets"})
        assert encoded.status_code == 200, encoded.text
        assert len(encoded.json()["vectors"]) == 32 and len(encoded.json()["vectors"][0]) == 384
        by_vectors = client.post("/indexes/web/search", json={"vectors": encoded.json()["vectors"], "k": 3}).json()["hits"]
        assert [h["external_id"] for h in by_vectors] == [h["external_id"] for h in hits]

        vectors = [[0.05] * 384 for _ in range(4)]
        assert len(client.post("/indexes/web/search", json={"vectors": vectors, "k": 2}).json()["hits"]) == 2

        added = client.post("/indexes/web/documents", json={"documents": [{"id": "axo", "text": "Axolotl limb regeneration."}]})
        assert added.status_code == 201 and added.json() == {"changed": 1}
        top = client.post("/indexes/web/search", json={"query": "axolotl regeneration", "k": 1}).json()["hits"][0]
        assert top["external_id"] == "axo"
        updated = client.put("/indexes/web/documents", json={"documents": [{"id": "axo", "text": "Glacier meltwater.", "metadata": {"v": 2}}]})
        assert updated.status_code == 200 and updated.json() == {"changed": 1}
        top = client.post("/indexes/web/search", json={"query": "axolotl regeneration", "k": 1}).json()["hits"][0]
        assert top["external_id"] != "axo" or top["metadata"] == {"v": 2}
        assert client.delete("/indexes/web/documents/axo").json() == {"changed": 1}
        assert client.get("/indexes/web").json()["documents"] == 24


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("post", "/indexes/nope/search", {"query": "x"}, 404, "nope"),
        ("get", "/indexes/nope", None, 404, "nope"),
        ("post", "/indexes/web/search", {"query": ""}, 422, "empty"),
        ("post", "/indexes/web/encode", {"query": ""}, 422, "empty"),
        ("post", "/indexes/nope/encode", {"query": "x"}, 404, "nope"),
        ("post", "/indexes/web/search", {"query": "x", "vectors": [[0.0] * 384]}, 422, "exactly one"),
        ("post", "/indexes/web/search", {"vectors": [[0.0] * 3]}, 422, "384"),
        ("post", "/indexes/web/search", {"query": "x" * 20_000}, 413, "at most"),
        ("post", "/indexes/web/documents", {"documents": [{"id": "d1", "text": "again"}]}, 422, "HTTP PUT /indexes/NAME/documents"),
        ("put", "/indexes/web/documents", {"documents": [{"id": "new", "text": "x"}]}, 404, "HTTP POST /indexes/NAME/documents"),
        ("post", "/indexes/web/documents", {"documents": [{"id": "e", "text": "  "}]}, 422, "empty"),
        ("delete", "/indexes/web/documents/missing", None, 404, "missing"),
    ],
)
def test_errors_are_json_with_proper_status(http_server: str, method: str, path: str, body: Any, status: int, message: str) -> None:
    with httpx.Client(base_url=http_server, timeout=60) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])


def test_no_server_errors(service_app: Any) -> None:
    """schemathesis generates requests from the OpenAPI schema, operation by operation: none may give a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", service_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"

        no_server_error()


def test_concurrent_queries_are_encoded_together(encoder: Encoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from colpg.errors import EncodingError
    from colpg.service import QueryBatcher

    batches: list[int] = []

    class Recording:
        """The encoder, counting the queries of each call."""

        def encode_queries(self, queries: list[str]) -> torch.Tensor:
            batches.append(len(queries))
            return encoder.encode_queries(queries)

    batcher = QueryBatcher(Recording(), wait_s=0.2)  # type: ignore[arg-type]
    texts = ["glaciers", "brain development", "", "cancer cells", "ice sheets"]
    with ThreadPoolExecutor(len(texts)) as pool:
        futures = [pool.submit(batcher.encode, text) for text in texts]
    for text, future in zip(texts, futures, strict=True):
        if not text:
            with pytest.raises(EncodingError, match="empty"):
                future.result()
        else:
            assert torch.allclose(future.result(), encoder.encode_queries([text])[0], atol=1e-5)
    assert max(batches) > 1  # concurrent requests shared a forward pass (the failing one was then retried alone)
