"""The HTTP column of the privilege matrix: every endpoint, anonymous and with a read and a write key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import KEYS, READ_KEY, WRITE_KEY, bearer, fresh_database

from colpg.encoder import Encoder
from colpg.indexer import IndexConfig, Indexer
from colpg.service import create_app

DOCUMENT = {"documents": [{"id": "access", "text": "A document written to test who may write."}]}
#: (method, path, body) in an order that leaves the index as it was; expected status per caller.
ENDPOINTS: list[tuple[str, str, Any, dict[str, int]]] = [
    ("GET", "/health", None, {"anonymous": 200, "read": 200, "write": 200}),
    ("GET", "/indexes/acl", None, {"anonymous": 401, "read": 200, "write": 200}),
    ("POST", "/indexes/acl/search", {"query": "who may write", "k": 2}, {"anonymous": 401, "read": 200, "write": 200}),
    ("POST", "/indexes/acl/encode", {"query": "who may write"}, {"anonymous": 401, "read": 200, "write": 200}),
    ("POST", "/indexes/acl/rerank", {"query": "who may write", "ids": ["0", "1"]}, {"anonymous": 401, "read": 200, "write": 200}),
    ("POST", "/rerank", {"query": "who may write", "texts": ["a text"], "index": "acl"}, {"anonymous": 401, "read": 200, "write": 200}),
    ("POST", "/indexes/acl/documents", DOCUMENT, {"anonymous": 401, "read": 403, "write": 201}),
    ("PUT", "/indexes/acl/documents", DOCUMENT, {"anonymous": 401, "read": 403, "write": 200}),
    ("DELETE", "/indexes/acl/documents/access", None, {"anonymous": 401, "read": 403, "write": 200}),
]
CALLERS = {"anonymous": {}, "read": bearer(READ_KEY), "write": bearer(WRITE_KEY)}


@pytest.fixture(scope="module")
def client(encoder: Encoder, small_texts: list[str], server: Any) -> Iterator[TestClient]:
    with fresh_database(server.url) as url:
        Indexer(encoder, IndexConfig(kmeans_niters=2), url=url).index("acl", small_texts[:6])
        yield TestClient(create_app(url, keys=KEYS))


@pytest.mark.parametrize("caller", list(CALLERS))
def test_every_endpoint_for_every_caller(client: TestClient, caller: str) -> None:
    for method, path, body, expected in ENDPOINTS:
        response = client.request(method, path, json=body, headers=CALLERS[caller])
        assert response.status_code == expected[caller], f"{caller} {method} {path}: {response.status_code} {response.text}"
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"
