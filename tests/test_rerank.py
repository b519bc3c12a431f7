"""ColBERT as a reranker: Index.rerank, rerank_texts, orm.rerank, HTTP and CLI, on a real index."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from service_support import KEYS, READ_KEY, bearer
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from colpg import db
from colpg.cli import app as cli_app
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.orm import Document, rerank
from colpg.reranking import full_length, rerank_texts
from colpg.scoring import maxsim_flat, owners
from colpg.service import create_app

QUERY = "white matter development in the newborn brain"
CANDIDATES = ["d3", "d0", "d17", "d8", "d21", "d12"]


@pytest.fixture
def index(migrated_url: str, encoder: Encoder, small_texts: list[str]) -> Index:
    corpus = [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(small_texts)]
    return Indexer(encoder, IndexConfig(kmeans_niters=2)).index("scifact", corpus)


def _exact(index: Index, ids: list[str], k: int | None = None) -> list[tuple[str, float]]:
    hits = index.search(QUERY, k=k or len(ids), exact=True, where=Document.external_id.in_(ids))
    return [(h.external_id, h.score) for h in hits]


def test_rerank_equals_exact_search_restricted_to_the_ids(index: Index) -> None:
    reranked = index.rerank(QUERY, CANDIDATES)
    assert [(h.external_id, h.score) for h in reranked.hits] == [(i, pytest.approx(s, abs=1e-5)) for i, s in _exact(index, CANDIDATES)]
    assert [h.rank for h in reranked.hits] == [1, 2, 3, 4, 5, 6] and reranked.unknown == [] and reranked.not_indexed == []
    top = index.rerank(QUERY, CANDIDATES + ["d3"], k=2)  # an id repeated counts once
    assert [h.external_id for h in top.hits] == [i for i, _ in _exact(index, CANDIDATES, 2)]
    assert top.hits[0].text and top.hits[0].metadata == {"n": int(top.hits[0].external_id[1:])}


def test_unknown_ids_are_reported_and_no_ids_is_no_result(index: Index) -> None:
    reranked = index.rerank(QUERY, ["nope", "d1", "d999"])
    assert [h.external_id for h in reranked.hits] == ["d1"]
    assert reranked.unknown == ["nope", "d999"] and reranked.not_indexed == []
    assert index.rerank(QUERY, []).hits == [] and index.rerank(QUERY, ["nope"]).unknown == ["nope"]
    with pytest.raises(ConfigurationError, match="k must be a positive integer"):
        index.rerank(QUERY, ["d1"], k=0)


def test_explanations_as_in_search(index: Index) -> None:
    [hit] = index.rerank(QUERY, ["d5"], explain=True).hits
    [searched] = index.search(QUERY, k=1, exact=True, where=Document.external_id == "d5", explain=True)
    assert hit.explanation == searched.explanation and hit.explanation


def test_a_document_changed_after_the_first_stage(index: Index, small_texts: list[str]) -> None:
    """Index.update between first stage and rerank: the new tokens are scored. A plain SQL text
    change drops the tokens until a worker encodes it again: reported as not indexed."""
    candidates = [h.external_id for h in index.search(QUERY, k=5)]
    index.update([{"id": candidates[-1], "text": "White matter development in the newborn brain, imaged by MRI."}])
    reranked = index.rerank(QUERY, candidates)
    assert reranked.hits[0].external_id == candidates[-1] and reranked.hits[0].text.startswith("White matter development")
    assert [(h.external_id, h.score) for h in reranked.hits] == [(i, pytest.approx(s, abs=1e-5)) for i, s in _exact(index, candidates)]
    with db.connect(index.url, autocommit=True) as conn:
        conn.execute("UPDATE colpg.documents SET text = 'changed' WHERE external_id = %(id)s", {"id": candidates[0]})
    reranked = index.rerank(QUERY, candidates)
    assert reranked.not_indexed == [candidates[0]] and reranked.unknown == []
    assert candidates[0] not in [h.external_id for h in reranked.hits] and len(reranked.hits) == 4


def test_rerank_texts_is_maxsim_of_the_encoders_vectors(encoder: Encoder, small_texts: list[str]) -> None:
    texts = small_texts[:5] + [" ".join(small_texts[5:9])]  # the last is longer than doc_maxlen (220)
    hits = rerank_texts(QUERY, texts, encoder, explain=True)
    whole = full_length(encoder)
    assert whole.settings.doc_maxlen == 512 and whole.backbone is encoder.backbone
    documents = whole.encode_documents(texts)
    assert len(documents[-1]) > encoder.settings.doc_maxlen  # kept whole, not cut at the index's length
    scores = maxsim_flat(encoder.encode_queries([QUERY]), torch.cat(documents), owners([len(d) for d in documents]), len(texts))[0]
    expected = sorted(enumerate(scores.tolist()), key=lambda item: -item[1])
    assert [(h.position, h.score) for h in hits] == [(p, pytest.approx(s, abs=1e-5)) for p, s in expected]
    assert [h.rank for h in hits] == list(range(1, 7)) and all(h.explanation for h in hits)
    assert [h.position for h in rerank_texts(QUERY, texts, encoder, k=2)] == [p for p, _ in expected[:2]]
    assert rerank_texts(QUERY, [], encoder) == []


def test_colpg_rerank_is_the_text_reranker_loaded_on_first_use(encoder: Encoder, small_texts: list[str]) -> None:
    """``colpg.rerank(query, texts, model=...)`` as the issue names it; ``import colpg`` alone loads no torch."""
    import colpg
    from colpg import rerank as from_import

    assert colpg.rerank is from_import is rerank_texts and "rerank" in colpg.__all__
    texts = small_texts[:3]
    assert colpg.rerank(QUERY, texts, model=encoder, k=2) == rerank_texts(QUERY, texts, encoder, k=2)
    with pytest.raises(AttributeError, match="no attribute 'reranker'"):
        colpg.reranker  # noqa: B018  # the module's __getattr__ knows only rerank
    probe = "import sys, colpg; assert 'torch' not in sys.modules; from colpg import rerank; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_orm_rerank_of_an_applications_select(index: Index) -> None:
    engine = db.create_engine(index.url)
    with Session(engine) as session:
        stmt = sa.select(Document).where(Document.metadata_["n"].as_integer() < 6)
        results = rerank(session, stmt, index, QUERY, k=3)
        expected = _exact(index, [f"d{i}" for i in range(6)], 3)
        assert [(d.external_id, s) for d, s in results] == [(i, pytest.approx(s, abs=1e-5)) for i, s in expected]
        assert all(isinstance(d, Document) for d, _ in results)
        assert len(rerank(session, stmt, index, QUERY)) == 6
        assert rerank(session, stmt.where(Document.external_id == "none"), index, QUERY) == []
    engine.dispose()


@pytest.fixture
def http(index: Index) -> Iterator[TestClient]:
    with TestClient(create_app(index.url, keys=KEYS)) as client:
        yield client


def test_http_rerank_of_ids_and_of_texts(http: TestClient, index: Index, small_texts: list[str]) -> None:
    body = {"query": QUERY, "ids": [*CANDIDATES, "nope"], "k": 3, "explain": True}
    assert http.post("/indexes/scifact/rerank", json=body).status_code == 401
    answer = http.post("/indexes/scifact/rerank", json=body, headers=bearer(READ_KEY))
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert [(h["external_id"], h["score"]) for h in found["hits"]] == [
        (i, pytest.approx(s, abs=1e-4)) for i, s in _exact(index, CANDIDATES, 3)
    ]
    assert found["unknown"] == ["nope"] and found["not_indexed"] == [] and found["hits"][0]["explanation"]
    empty = http.post("/indexes/scifact/rerank", json={"query": QUERY, "ids": []}, headers=bearer(READ_KEY)).json()
    assert empty == {"hits": [], "unknown": [], "not_indexed": []}

    texts = small_texts[:4]
    request = {"query": QUERY, "texts": texts, "index": "scifact", "k": 2}
    assert http.post("/rerank", json=request).status_code == 401
    answer = http.post("/rerank", json=request, headers=bearer(READ_KEY))
    assert answer.status_code == 200, answer.text
    expected = rerank_texts(QUERY, texts, index.encoder, k=2)
    assert [(h["position"], h["score"]) for h in answer.json()["hits"]] == [
        (h.position, pytest.approx(h.score, abs=1e-4)) for h in expected
    ]
    missing = http.post("/rerank", json=request | {"index": "absent"}, headers=bearer(READ_KEY))
    assert missing.status_code == 404
    assert http.post("/rerank", json=request | {"model": "/etc"}, headers=bearer(READ_KEY)).status_code == 422  # no model path


def test_cli_rerank(index: Index, tmp_path: Path, small_texts: list[str]) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["rerank", "scifact", QUERY, "d3", "d0", "nope"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [i for i, _ in _exact(index, ["d3", "d0"])]
    assert "nope" in result.stderr and "unknown" in result.stderr
    assert runner.invoke(cli_app, ["rerank", "scifact", QUERY, "nope"]).exit_code == 1
    collection = tmp_path / "texts.tsv"
    collection.write_text("".join(f"t{i}\t{text}\n" for i, text in enumerate(small_texts[:3])))
    result = runner.invoke(cli_app, ["rerank", "scifact", QUERY, "--texts", str(collection), "-k", "2"])
    assert result.exit_code == 0, result.output
    expected = rerank_texts(QUERY, small_texts[:3], index.encoder, k=2)
    assert [line.split()[2] for line in result.stdout.splitlines()] == [f"t{h.position}" for h in expected]
