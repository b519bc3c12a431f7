"""Helpers of the HTTP service's tests: a database of their own, uvicorn on a free port, API keys."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import uvicorn
from sqlalchemy.engine import make_url

from colpg import db, migrate
from colpg.auth import ApiKeys

READ_KEY = "read-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"
KEYS = ApiKeys.parse(f"read:{READ_KEY}, write:{WRITE_KEY}")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database at colpg's head revision on the server at ``server_url``, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with db.connect(server_url, autocommit=True, vector_types=False) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # generated name, no user input
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with db.connect(server_url, autocommit=True, vector_types=False) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
