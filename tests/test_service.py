"""The HTTP service against a running server (uvicorn on a free port), and schemathesis on its OpenAPI schema.

One index ("web") serves the whole module; tests that change it put it back (schemathesis, which
changes it at random, runs last).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from service_support import KEYS, READ_KEY, WRITE_KEY, bearer, fresh_database, running

from colpg import embedded
from colpg.encoder import Encoder
from colpg.indexer import IndexConfig, Indexer
from colpg.limits import MAX_DOCUMENT_CHARS, MAX_ID_CHARS, MAX_METADATA_BYTES, MAX_QUERY_CHARS, MAX_REQUEST_TEXT_CHARS
from colpg.service import create_app


@pytest.fixture(scope="module")
def web_url(server: embedded.EmbeddedServer, encoder: Encoder, small_texts: list[str]) -> Iterator[str]:
    with fresh_database(server.url) as url:
        corpus = [{"id": f"d{i}", "text": t, "metadata": {"n": i, "even": i % 2 == 0}} for i, t in enumerate(small_texts)]
        Indexer(encoder, IndexConfig(kmeans_niters=2), url=url).index("web", corpus)
        yield url


@pytest.fixture(scope="module")
def service_app(web_url: str) -> Any:
    return create_app(web_url, keys=KEYS)


@pytest.fixture(scope="module")
def http_server(service_app: Any) -> Iterator[str]:
    with running(service_app) as base:
        yield base


def client(base: str, key: str | None = WRITE_KEY) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60, headers=bearer(key) if key else None)


def test_search_documents_and_stats_over_http(http_server: str) -> None:
    with client(http_server) as http:
        assert http.get("/health").json()["status"] == "ok"
        found = http.post("/indexes/web/search", json={"query": "glaciers and ice sheets", "k": 3, "explain": True})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["explanation"]

        even = http.post("/indexes/web/search", json={"query": "cells", "k": 5, "filter": {"even": True}}).json()["hits"]
        assert len(even) == 5 and all(h["metadata"]["even"] for h in even)

        encoded = http.post("/indexes/web/encode", json={"query": "glaciers and ice sheets"})
        assert encoded.status_code == 200, encoded.text
        assert len(encoded.json()["vectors"]) == 32 and len(encoded.json()["vectors"][0]) == 384
        by_vectors = http.post("/indexes/web/search", json={"vectors": encoded.json()["vectors"], "k": 3}).json()["hits"]
        assert [h["external_id"] for h in by_vectors] == [h["external_id"] for h in hits]

        vectors = [[0.05] * 384 for _ in range(4)]
        assert len(http.post("/indexes/web/search", json={"vectors": vectors, "k": 2}).json()["hits"]) == 2

        added = http.post("/indexes/web/documents", json={"documents": [{"id": "axo", "text": "Axolotl limb regeneration."}]})
        assert added.status_code == 201 and added.json() == {"changed": 1}
        top = http.post("/indexes/web/search", json={"query": "axolotl regeneration", "k": 1}).json()["hits"][0]
        assert top["external_id"] == "axo"
        updated = http.put(
            "/indexes/web/documents", json={"documents": [{"id": "axo", "text": "Glacier meltwater.", "metadata": {"v": 2}}]}
        )
        assert updated.status_code == 200 and updated.json() == {"changed": 1}
        top = http.post("/indexes/web/search", json={"query": "axolotl regeneration", "k": 1}).json()["hits"][0]
        assert top["external_id"] != "axo" or top["metadata"] == {"v": 2}
        assert http.delete("/indexes/web/documents/axo").json() == {"changed": 1}
        assert http.get("/indexes/web").json()["documents"] == 24


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
        ("post", "/indexes/web/search", {"query": "x" * 20_000}, 422, "at most"),
        ("post", "/indexes/web/documents", {"documents": [{"id": "d1", "text": "again"}]}, 422, "HTTP PUT /indexes/NAME/documents"),
        ("put", "/indexes/web/documents", {"documents": [{"id": "new", "text": "x"}]}, 404, "HTTP POST /indexes/NAME/documents"),
        ("post", "/indexes/web/documents", {"documents": [{"id": "e", "text": "  "}]}, 422, "empty"),
        ("delete", "/indexes/web/documents/missing", None, 404, "missing"),
    ],
)
def test_errors_are_json_with_proper_status(http_server: str, method: str, path: str, body: Any, status: int, message: str) -> None:
    with client(http_server) as http:
        response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])


NUL, SURROGATE, HUGE = r"\u0000", r"\ud800", "1e400"


def documents(id_: str = '"h1"', text: str = '"hello"', metadata: str = "{}") -> str:
    return f'{{"documents": [{{"id": {id_}, "text": {text}, "metadata": {metadata}}}]}}'


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/indexes/web/search", f'{{"query": "vitamin {SURROGATE}"}}', "query"),
        ("post", "/indexes/web/encode", f'{{"query": "vitamin {SURROGATE}"}}', "query"),
        ("post", "/indexes/web/search", f'{{"query": "vitamin {NUL}"}}', "query"),
        ("post", "/indexes/web/search", f'{{"query": "{"x" * (MAX_QUERY_CHARS + 1)}"}}', "query"),
        ("post", "/indexes/web/search", f'{{"query": "x", "filter": {{"lang": "en{NUL}"}}}}', "filter"),
        ("post", "/indexes/web/search", f'{{"query": "x", "filter": {{"lang": "en{SURROGATE}"}}}}', "filter"),
        ("post", "/indexes/web/search", f'{{"query": "x", "filter": {{"n": {HUGE}}}}}', "filter"),
        ("post", "/indexes/web/search", f'{{"query": "x", "filter": {{"l{NUL}": 1}}}}', "filter"),
        ("post", "/indexes/web/search", f'{{"vectors": [[{", ".join([HUGE] + ["0.1"] * 383)}]]}}', "vectors"),
        ("post", "/indexes/web/search", '{"vectors": [[NaN, 1.0]]}', "vectors"),
        ("post", "/indexes/web/search", f'{{"vectors": [{[0.0] * 384}]}}', "vectors"),
        ("post", "/indexes/web/documents", documents(text=f'"a{NUL}b"'), "text"),
        ("post", "/indexes/web/documents", documents(text=f'"a{SURROGATE}b"'), "text"),
        ("put", "/indexes/web/documents", documents(id_='"d1"', text=f'"a{NUL}b"'), "text"),
        ("post", "/indexes/web/documents", documents(id_=f'"h{NUL}"'), "id"),
        ("post", "/indexes/web/documents", documents(id_=f'"h{SURROGATE}"'), "id"),
        ("post", "/indexes/web/documents", documents(id_=f'"{"i" * 1_000_000}"'), "id"),
        ("post", "/indexes/web/documents", documents(metadata=f'{{"a": [{{"b": "{NUL}"}}]}}'), "metadata"),
        ("post", "/indexes/web/documents", documents(metadata=f'{{"{SURROGATE}": 1}}'), "metadata"),
        ("post", "/indexes/web/documents", documents(metadata=f'{{"a": {HUGE}}}'), "metadata"),
        ("post", "/indexes/web/documents", documents(metadata=f'{{"a": "{"m" * MAX_METADATA_BYTES}"}}'), "metadata"),
        ("post", "/indexes/web/documents", documents(text=f'"{"t" * (MAX_DOCUMENT_CHARS + 1)}"'), "text"),
        (
            "post",
            "/indexes/web/documents",
            json.dumps({"documents": [{"id": f"t{i}", "text": "t" * MAX_DOCUMENT_CHARS} for i in range(5)]}),
            "documents",
        ),
        ("delete", "/indexes/web/documents/a%00b", None, "external_id"),
        ("delete", f"/indexes/web/documents/{'i' * (MAX_ID_CHARS + 1)}", None, "external_id"),
    ],
)
def test_hostile_input_is_a_json_4xx_naming_the_field(http_server: str, method: str, path: str, body: str | None, field: str) -> None:
    assert MAX_DOCUMENT_CHARS * 5 > MAX_REQUEST_TEXT_CHARS  # the case of five long documents is over the per-request total
    with client(http_server) as http:
        response = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, response.text[:500]
        assert field in str(response.json()["detail"]), response.text[:500]
        assert http.get("/health").status_code == 200  # the keep-alive connection still serves
    assert len(response.content) < 4096  # the refused input is not echoed back


def test_query_vectors_of_huge_values_give_finite_scores(http_server: str) -> None:
    with client(http_server, READ_KEY) as http:
        response = http.post("/indexes/web/search", json={"vectors": [[3e38] * 384, [-1e-300] * 384], "k": 3})
    assert response.status_code == 200, response.text
    scores = [hit["score"] for hit in response.json()["hits"]]
    assert len(scores) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in scores)


def test_api_keys(http_server: str) -> None:
    search = {"query": "glaciers", "k": 1}
    add = {"documents": [{"id": "keyed", "text": "Written with a write key."}]}
    with httpx.Client(base_url=http_server, timeout=60) as http:
        assert http.get("/health").status_code == 200  # open: it says nothing but status
        for headers in ({}, bearer("not-a-key-of-this-service"), {"Authorization": f"Basic {READ_KEY}"}):
            refused = http.post("/indexes/web/search", json=search, headers=headers)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer", refused.text
            assert "key" in refused.json()["detail"]
        assert http.post("/indexes/web/search", json=search, headers=bearer(READ_KEY)).status_code == 200
        assert http.get("/indexes/web", headers=bearer(READ_KEY)).status_code == 200
        for method, path, body in (
            ("post", "/indexes/web/documents", add),
            ("put", "/indexes/web/documents", add),
            ("delete", "/indexes/web/documents/d1", None),
        ):
            forbidden = http.request(method, path, json=body, headers=bearer(READ_KEY))
            assert forbidden.status_code == 403 and "write" in forbidden.json()["detail"], forbidden.text
        assert http.post("/indexes/web/documents", json=add, headers=bearer(WRITE_KEY)).status_code == 201
        assert http.post("/indexes/web/search", json=search, headers=bearer(WRITE_KEY)).status_code == 200
        assert http.delete("/indexes/web/documents/keyed", headers=bearer(WRITE_KEY)).json() == {"changed": 1}
        schema = http.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/indexes/{name}/search"]["post"]["security"] == [{"HTTPBearer": []}]


def test_concurrent_posts_of_one_id(http_server: str) -> None:
    """Exactly one request adds the id; the others get the documented 422 (an id already present), never a 500."""
    body = {"documents": [{"id": "race", "text": "Two clients add the same document at once."}]}
    with client(http_server) as http, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: http.post("/indexes/web/documents", json=body), range(8)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] + [422] * 7, [r.text for r in responses]
        assert all("race" in str(r.json()["detail"]) or "same time" in r.json()["detail"] for r in responses if r.status_code == 422)
        assert http.delete("/indexes/web/documents/race").json() == {"changed": 1}


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


def test_no_server_errors(service_app: Any) -> None:
    """schemathesis generates requests from the OpenAPI schema, operation by operation: none may give a 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", service_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: Any) -> None:
            response = case.call(headers=bearer(WRITE_KEY))
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"

        no_server_error()
