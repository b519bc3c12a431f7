"""The service refuses an oversized body before parsing it: from Content-Length, and while a chunked body streams."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from service_support import WRITE_KEY, bearer, running

from colpg.errors import ConfigurationError
from colpg.service import create_app

LIMIT = 1 << 20
BODY = 50 << 20
CHUNK = b"x" * (1 << 20)


class Counted:
    """A 50 MB body produced chunk by chunk; counts what the client was allowed to send."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < BODY:
            self.sent += len(CHUNK)
            yield CHUNK


@pytest.fixture
def limited_server(migrated_url: str) -> Iterator[str]:
    with running(create_app(migrated_url, anonymous=True, max_body_bytes=LIMIT)) as base:
        yield base


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_oversized_body_is_refused_unread(limited_server: str, declared: bool) -> None:
    body = Counted()
    headers: dict[str, Any] = {"Content-Type": "application/json"} | ({"Content-Length": str(BODY)} if declared else {})
    rss_before = psutil.Process().memory_info().rss
    started = time.monotonic()
    with httpx.Client(base_url=limited_server, timeout=30) as http:
        response = http.post("/indexes/web/documents", content=iter(body), headers=headers)
    elapsed = time.monotonic() - started
    grown = psutil.Process().memory_info().rss - rss_before
    assert response.status_code == 413, response.text
    assert str(LIMIT) in response.json()["detail"]
    assert elapsed < 10
    assert body.sent < BODY / 2, f"the client sent {body.sent} bytes: the service kept reading"
    assert grown < 16 << 20, f"the process grew by {grown} bytes"


def test_body_under_the_limit_is_parsed(limited_server: str) -> None:
    with httpx.Client(base_url=limited_server, timeout=30) as http:
        response = http.post("/indexes/nope/search", json={"query": "x" * 1000})
    assert response.status_code == 404, response.text


def test_keys_are_required_unless_anonymous(migrated_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLPG_API_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="--no-auth"):
        create_app(migrated_url)
    monkeypatch.setenv("COLPG_API_KEYS", "admin:0123456789abcdef0123")
    with pytest.raises(ConfigurationError, match="read or write"):
        create_app(migrated_url)
    monkeypatch.setenv("COLPG_API_KEYS", "read:short")
    with pytest.raises(ConfigurationError, match="16"):
        create_app(migrated_url)
    monkeypatch.setenv("COLPG_API_KEYS", f"write:{WRITE_KEY}")
    with running(create_app(migrated_url)) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.post("/indexes/nope/search", json={"query": "x"}).status_code == 401
        assert http.post("/indexes/nope/search", json={"query": "x"}, headers=bearer(WRITE_KEY)).status_code == 404
