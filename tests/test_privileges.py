"""The privilege matrix of colpg's roles (README, "Roles"), every cell checked on the real server.

Each cell runs one statement as one role (SET LOCAL ROLE) in a transaction that is rolled
back, against one index built once for the module. The login tests then run colpg's own
Python paths as LOGIN roles that are members of colpg_service and colpg_worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from colpg import db, embedded, migrate
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer

ROLES = ("colpg_reader", "colpg_writer", "colpg_service", "colpg_worker")
OK = None
DENIED = psycopg.errors.InsufficientPrivilege
#: An explicit id, whoever gives it: ids come from the sequence.
NOT_FROM_SEQUENCE = psycopg.errors.GeneratedAlways

#: action -> (statement, outcome per role in ROLES order). %(q)s is a one-token query vector array.
MATRIX: dict[str, tuple[str, tuple[type[Exception] | None, ...]]] = {
    "read documents": ("SELECT external_id, text, metadata, status, error FROM colpg.documents", (OK, OK, OK, OK)),
    "read index_health": ("SELECT * FROM colpg.index_health", (OK, OK, OK, DENIED)),
    "insert a document": (
        "INSERT INTO colpg.documents (index_id, external_id, text) VALUES (colpg.index_id('priv'), 'new', 'New text.')",
        (DENIED, OK, OK, DENIED),
    ),
    "insert a document with an explicit id": (
        "INSERT INTO colpg.documents (id, index_id, external_id, text) VALUES (987654, colpg.index_id('priv'), 'new', 'x')",
        (NOT_FROM_SEQUENCE, NOT_FROM_SEQUENCE, NOT_FROM_SEQUENCE, NOT_FROM_SEQUENCE),
    ),
    "insert a document overriding the sequence": (
        "INSERT INTO colpg.documents (id, index_id, external_id, text) OVERRIDING SYSTEM VALUE VALUES (987654, 1, 'new', 'x')",
        (DENIED, DENIED, OK, DENIED),  # the service writes ids it reserved by nextval (COPY)
    ),
    "set status ready": ("UPDATE colpg.documents SET status = 'ready' WHERE external_id = 'd1'", (DENIED, DENIED, DENIED, OK)),
    "forge a failure": (
        "UPDATE colpg.documents SET status = 'failed', error = 'forged' WHERE external_id = 'd1'",
        (DENIED, DENIED, DENIED, OK),
    ),
    "update text": ("UPDATE colpg.documents SET text = 'Other words.' WHERE external_id = 'd2'", (DENIED, OK, DENIED, DENIED)),
    "update metadata": ("UPDATE colpg.documents SET metadata = '{\"k\": 1}' WHERE external_id = 'd2'", (DENIED, OK, DENIED, DENIED)),
    "delete a document": ("DELETE FROM colpg.documents WHERE external_id = 'd1'", (DENIED, OK, OK, DENIED)),
    "search via colpg.candidates": ("SELECT * FROM colpg.candidates('priv', %(q)s, 8)", (OK, DENIED, DENIED, DENIED)),
    "search via colpg.search_approx": ("SELECT * FROM colpg.search_approx('priv', %(q)s, 3)", (OK, DENIED, DENIED, DENIED)),
    "query_cells with ncells 10000": (
        "SELECT * FROM colpg.query_cells('priv', %(q)s, 10000)",
        (DENIED, DENIED, DENIED, DENIED),
    ),
    "read centroids": ("SELECT centroid FROM colpg.centroids", (DENIED, DENIED, OK, OK)),
    "read codec parameters": ("SELECT bucket_cutoffs, bucket_weights, rerank_codec FROM colpg.indexes", (DENIED, DENIED, OK, OK)),
    "read token codes and residuals": ("SELECT codes, residuals FROM colpg.document_tokens", (DENIED, DENIED, OK, OK)),
    "read rerank rows": ("SELECT payload FROM colpg.rerank_vectors", (DENIED, DENIED, OK, OK)),
    "delete token rows": ("DELETE FROM colpg.document_tokens WHERE ntokens > 0", (DENIED, DENIED, DENIED, OK)),
    "trim the token-change log": (
        "SELECT colpg.trim_token_changes(colpg.index_id('priv'), 0)",
        (DENIED, DENIED, OK, OK),
    ),
    "change an index": ("UPDATE colpg.indexes SET status = 'building'", (DENIED, DENIED, DENIED, DENIED)),
    "delete centroids": ("DELETE FROM colpg.centroids", (DENIED, DENIED, DENIED, DENIED)),
    "drop a table": ("DROP TABLE colpg.documents", (DENIED, DENIED, DENIED, DENIED)),
    "create a table in colpg": ("CREATE TABLE colpg.mine (i integer)", (DENIED, DENIED, DENIED, DENIED)),
    "read pg_authid": ("SELECT rolname, rolpassword FROM pg_authid", (DENIED, DENIED, DENIED, DENIED)),
}

CELLS = [
    pytest.param(statement, role, outcome, id=f"{action}-{role}")
    for action, (statement, outcomes) in MATRIX.items()
    for role, outcome in zip(ROLES, outcomes, strict=True)
]


@pytest.fixture(scope="module")
def priv_url(server: embedded.EmbeddedServer, encoder: Encoder, small_texts: list[str]) -> Iterator[str]:
    """A migrated database of its own with index 'priv' (8 documents, int8 store), for the module."""
    name = f"t_priv_{uuid.uuid4().hex[:12]}"
    with db.connect(server.url, autocommit=True, vector_types=False) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(server.url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    corpus = [{"id": f"d{i}", "text": text} for i, text in enumerate(small_texts[:8])]
    Indexer(encoder, IndexConfig(kmeans_niters=2), url=url).index("priv", corpus)
    yield url
    with db.connect(server.url, autocommit=True, vector_types=False) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def owner(priv_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(priv_url) as conn:
        yield conn


@pytest.mark.parametrize(("statement", "role", "outcome"), CELLS)
def test_privilege_matrix(owner: psycopg.Connection[Any], statement: str, role: str, outcome: type[Exception] | None) -> None:
    one_hot = [np.eye(384, dtype=np.float32)[0]]
    try:
        owner.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        if outcome is None:
            owner.execute(statement.encode(), {"q": one_hot})
        else:
            with pytest.raises(outcome):
                owner.execute(statement.encode(), {"q": one_hot})
    finally:
        owner.rollback()


@contextmanager
def login_role(owner: psycopg.Connection[Any], url: str, group: str) -> Iterator[str]:
    """A LOGIN role that is a member of ``group`` (and nothing else), and its URL; dropped after."""
    name = f"login_{uuid.uuid4().hex[:12]}"
    owner.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(name), sql.Identifier(group)))
    owner.commit()
    try:
        yield make_url(url).set(username=name, password=None).render_as_string(hide_password=False)
    finally:
        owner.rollback()
        owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        owner.commit()


def test_service_role_runs_search_and_document_writes(owner: psycopg.Connection[Any], priv_url: str, encoder: Encoder) -> None:
    with login_role(owner, priv_url, "colpg_service") as url:
        index = Index("priv", url=url, encoder=encoder)
        assert index.add([{"id": "svc", "text": "Penguins huddle through the Antarctic winter."}]) == 1
        assert index.search("penguins in winter", k=1)[0].external_id == "svc"
        assert index.update([{"id": "svc", "text": "Volcanic eruptions and magma chambers."}]) == 1
        hit = index.search("volcano magma", k=1)[0]
        assert (hit.external_id, hit.text) == ("svc", "Volcanic eruptions and magma chambers.")
        assert index.info()["documents"] == 9
        assert index.delete(["svc"]) == 1
        assert "svc" not in {hit.external_id for hit in index.search("volcano magma", k=9)}
        with db.connect(url) as conn:
            for statement in (
                "DROP TABLE colpg.documents",
                "UPDATE colpg.indexes SET status = 'building'",
                "SELECT rolpassword FROM pg_authid",
                "CREATE TABLE colpg.mine (i integer)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement.encode())
                conn.rollback()


def test_worker_role_indexes_rows_written_by_the_writer(owner: psycopg.Connection[Any], priv_url: str, encoder: Encoder) -> None:
    from colpg.worker import IngestWorker

    owner.execute("SET ROLE colpg_writer")
    owner.execute("INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('priv', 'queued', 'Axolotls regrow their limbs.')")
    owner.execute("RESET ROLE")
    owner.commit()
    with login_role(owner, priv_url, "colpg_worker") as url:
        assert IngestWorker(url).run_once() == 1
    assert owner.execute("SELECT status, error FROM colpg.documents WHERE external_id = 'queued'").fetchone() == ("ready", None)
    assert Index("priv", url=priv_url, encoder=encoder).search("axolotl limbs", k=1)[0].external_id == "queued"
    owner.execute("DELETE FROM colpg.documents WHERE external_id = 'queued'")
    owner.commit()
