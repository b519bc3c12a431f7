"""Building and changing an index in PostgreSQL, on the real server with MiniLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from colpg import db, store
from colpg.cli import app
from colpg.encoder import Encoder
from colpg.errors import (
    ConfigurationError,
    DocumentError,
    EncodingError,
    IndexExists,
    IndexNotFound,
)
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.stores import Int8Store

SMALL = IndexConfig(write_batch_size=5, kmeans_niters=2)


@pytest.fixture
def corpus(small_texts: list[str]) -> list[dict[str, Any]]:
    return [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(small_texts)]


def _rows(url: str, name: str) -> list[tuple[Any, ...]]:
    with db.connect(url) as conn:
        return conn.execute(
            """
            SELECT d.external_id, d.text, d.metadata, t.ntokens, t.codes, t.residuals, r.payload
            FROM colpg.documents d JOIN colpg.indexes i ON i.id = d.index_id
            JOIN colpg.document_tokens t ON t.document_id = d.id
            LEFT JOIN colpg.rerank_vectors r ON r.document_id = d.id
            WHERE i.name = %s ORDER BY d.external_id
            """,
            (name,),
        ).fetchall()


def test_build_writes_every_document_with_its_codes(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]]) -> None:
    index = Indexer(encoder, SMALL).index("scifact", corpus)
    info = index.info()
    assert info["status"] == "ready" and info["documents"] == 24 and info["precision"] == "int8"
    vectors = encoder.encode_documents([d["text"] for d in corpus])
    assert info["tokens"] == sum(len(v) for v in vectors)
    assert info["codes_residuals_column_bytes_per_token"] == pytest.approx(100, rel=0.02)
    assert info["rerank_column_bytes_per_token"] == pytest.approx(384, rel=0.01)
    rows = _rows(migrated_url, "scifact")
    assert [r[0] for r in rows] == sorted(d["id"] for d in corpus)
    assert all(len(r[5]) == r[3] * 96 and len(r[4]) == r[3] and len(r[6]) == r[3] * 384 for r in rows)
    assert rows[0][2] == {"n": 0}


def test_stored_codes_decompress_close_to_the_encoder(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]]) -> None:
    Indexer(encoder, SMALL).index("scifact", corpus)
    with db.connect(migrated_url) as conn:
        record = store.get_index(conn, "scifact")
        codec, rerank = store.load_codec(conn, record)
    row = _rows(migrated_url, "scifact")[0]
    original = encoder.encode_documents([corpus[0]["text"]])[0]
    codes = torch.tensor(row[4])
    packed = torch.frombuffer(bytearray(row[5]), dtype=torch.uint8).view(row[3], -1)
    assert float((codec.decompress(codes, packed) * original).sum(-1).mean()) > 0.94
    assert isinstance(rerank, Int8Store)
    stored = rerank.decode(rerank.raw({"payload": row[6], "ntokens": row[3]}))
    assert float((stored * original).sum(-1).min()) > 0.999


def test_each_document_keeps_its_padding_gap(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]]) -> None:
    """The index keeps the encoder's padding direction, and each token row the first stage's gap along it."""
    Indexer(encoder, SMALL).index("scifact", corpus)
    with db.connect(migrated_url) as conn:
        codec, _ = store.load_codec(conn, store.get_index(conn, "scifact"))
        stored = conn.execute(
            "SELECT t.padding_gap FROM colpg.document_tokens t JOIN colpg.documents d ON d.id = t.document_id ORDER BY d.external_id"
        ).fetchall()
    assert codec.padding is not None and torch.allclose(codec.padding, encoder.padding_direction(), atol=1e-6)
    rows = _rows(migrated_url, "scifact")
    vectors = encoder.encode_documents([d["text"] for d in sorted(corpus, key=lambda d: d["id"])])
    expected = [
        codec.padding_gaps(v, torch.tensor(r[4]), torch.frombuffer(bytearray(r[5]), dtype=torch.uint8).view(r[3], -1), [r[3]]).item()
        for v, r in zip(vectors, rows, strict=True)
    ]
    assert [g for (g,) in stored] == pytest.approx(expected, abs=1e-5)
    assert any(abs(g) > 1e-3 for g in expected)  # the 2-bit codes miss some of the exact similarity


def test_interrupted_build_resumes_to_the_same_rows(
    migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    Indexer(encoder, SMALL).index("whole", corpus)

    real_write = store.write_documents
    calls = {"n": 0}

    def dies_on_third_batch(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            real_write(*args, **kwargs)  # half-written inside the transaction, then the process "dies"
            raise KeyboardInterrupt
        real_write(*args, **kwargs)

    monkeypatch.setattr(store, "write_documents", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        Indexer(encoder, SMALL).index("resumed", corpus)
    monkeypatch.setattr(store, "write_documents", real_write)
    assert len(_rows(migrated_url, "resumed")) == 10  # two whole batches, nothing of the third
    assert Index("resumed").record.status == "building"

    Indexer(encoder, SMALL).index("resumed", corpus)
    assert Index("resumed").record.status == "ready"
    assert _rows(migrated_url, "resumed") == _rows(migrated_url, "whole")


def test_resume_with_another_collection_is_refused(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = store.write_documents
    monkeypatch.setattr(store, "write_documents", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        Indexer(encoder, SMALL).index("half", corpus)
    monkeypatch.setattr(store, "write_documents", real_write)
    with pytest.raises(IndexExists, match="interrupted build of 'half' used another collection"):
        Indexer(encoder, SMALL).index("half", corpus[:10])


def test_existing_index_needs_overwrite(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]]) -> None:
    Indexer(encoder, SMALL).index("twice", corpus[:8])
    with pytest.raises(IndexExists, match="exists already; pass overwrite=True"):
        Indexer(encoder, SMALL).index("twice", corpus[:8])
    assert Indexer(encoder, SMALL).index("twice", corpus[:6], overwrite=True).info()["documents"] == 6


def test_tiny_collection_of_plain_strings(migrated_url: str, encoder: Encoder) -> None:
    sentences = ["ColBERT scores with late interaction.", "PostgreSQL keeps the rows.", "pgvector adds vectors.",
                 "Residuals are compressed.", "Centroids come from k-means.", "Queries are padded with masks.",
                 "Documents drop punctuation.", "MaxSim sums the best matches."]
    info = Indexer(encoder, IndexConfig(nbits=1, precision="fp16")).index("tiny", sentences).info()
    assert info["documents"] == 8 and info["centroids"] <= info["tokens"]
    assert [r[0] for r in _rows(migrated_url, "tiny")] == [str(i) for i in range(8)]


@pytest.mark.parametrize("precision", ["none", "residual4", "fp16"])
def test_precision_stores(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]], precision: str) -> None:
    info = Indexer(encoder, IndexConfig(precision=precision, kmeans_niters=2)).index("p", corpus[:6]).info()
    expected = {"none": 0, "residual4": 192, "fp16": 768}[precision]
    assert info["rerank_column_bytes_per_token"] == pytest.approx(expected, rel=0.05, abs=1)


def test_add_update_delete_without_rebuild(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]]) -> None:
    index = Indexer(encoder, SMALL).index("live", corpus[:20])
    with db.connect(migrated_url) as conn:
        centroids_before = conn.execute("SELECT count(*) FROM colpg.centroids").fetchone()

    assert index.add(corpus[20:]) == 4
    assert index.info()["documents"] == 24
    index.update([{"id": "d3", "text": "Replaced text about vaccines.", "metadata": {"v": 2}}])
    row = next(r for r in _rows(migrated_url, "live") if r[0] == "d3")
    assert row[1] == "Replaced text about vaccines." and row[2] == {"v": 2}
    assert index.delete(["d0", "d1"]) == 2
    assert index.info()["documents"] == 22
    with db.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM colpg.centroids").fetchone() == centroids_before
        assert conn.execute("SELECT count(*) FROM colpg.document_tokens").fetchone() == (22,)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda i, c: i.add(c[:2]), DocumentError, "already holds 'd0', 'd1'; replace them with an update .*--update.*HTTP PUT"),
        (lambda i, c: i.add([{"id": "n1", "text": "x"}, {"id": "n1", "text": "y"}]), DocumentError, "'n1' appears twice"),
        (lambda i, c: i.add([{"id": "n1", "text": "fine"}, {"id": "n2", "text": "  "}]), EncodingError, r"document 1 \(n2\) is empty"),
        (lambda i, c: i.update([{"id": "nope", "text": "x"}]), DocumentError, "does not hold 'nope'"),
        (lambda i, c: i.delete(["d2", "nope"]), DocumentError, "does not hold 'nope'; nothing was deleted"),
    ],
)
def test_bad_changes_write_nothing(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]], call: Any, error: type[Exception], message: str) -> None:
    index = Indexer(encoder, SMALL).index("strict", corpus[:6])
    before = _rows(migrated_url, "strict")
    with pytest.raises(error, match=message):
        call(index, corpus)
    assert _rows(migrated_url, "strict") == before


def test_unknown_index_and_wrong_dimension(migrated_url: str, encoder: Encoder, corpus: list[dict[str, Any]], tmp_path: Path, minilm_path: Path) -> None:
    with pytest.raises(IndexNotFound, match="no index named 'ghost'"):
        Index("ghost")
    Indexer(encoder, SMALL).index("dims", corpus[:6])
    from colpg.testing import jinabert_config, write_jinabert_checkpoint

    folder = write_jinabert_checkpoint(tmp_path / "jina", minilm_path / "tokenizer.json", config=jinabert_config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32), dim=16)
    with pytest.raises(ConfigurationError, match="gives 16-dim vectors; index 'dims' holds 384-dim"):
        Index("dims", encoder=Encoder.from_pretrained(folder))


def test_bad_collections_are_refused_before_writing(migrated_url: str, encoder: Encoder) -> None:
    with pytest.raises(DocumentError, match="collection is empty"):
        Indexer(encoder, SMALL).index("empty", [])
    with pytest.raises(DocumentError, match="document 1 is a int"):
        Indexer(encoder, SMALL).index("bad", ["fine", 3])
    with pytest.raises(ConfigurationError, match="precision must be one of"):
        IndexConfig(precision="fp8")
    with db.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM colpg.indexes").fetchone() == (0,)


def test_cli_create_info_add_delete(migrated_url: str, minilm_path: Path, corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    runner = CliRunner()
    beir = tmp_path / "corpus.jsonl"
    beir.write_text("\n".join(json.dumps({"_id": d["id"], "title": "", "text": d["text"]}) for d in corpus[:10]))
    created = runner.invoke(app, ["index", "create", "cli", "--model", str(minilm_path), "--collection", str(beir)])
    assert created.exit_code == 0, created.output
    assert "indexed 10 documents into 'cli'" in created.output
    info = runner.invoke(app, ["index", "info", "cli"])
    assert info.exit_code == 0, info.output
    assert "documents        10" in info.output and "codes+residuals" in info.output and "document_tokens" in info.output
    extra = tmp_path / "more.tsv"
    extra.write_text("id\ttext\nx1\tan added document\nx2\tanother one\n")
    assert runner.invoke(app, ["index", "add", "cli", "--collection", str(extra)]).exit_code == 0
    assert "deleted 1 documents" in runner.invoke(app, ["index", "delete", "cli", "x1"]).output
    listed = runner.invoke(app, ["index", "list"])
    assert "cli" in listed.output and "11 docs" in listed.output
    missing = runner.invoke(app, ["index", "info", "ghost"])
    assert missing.exit_code == 1 and "no index named 'ghost'" in missing.output
    dropped_ghost = runner.invoke(app, ["index", "drop", "ghost"], input="")  # no question before the error
    assert dropped_ghost.exit_code == 1 and "no index named 'ghost'" in dropped_ghost.output and "?" not in dropped_ghost.output
    kept = runner.invoke(app, ["index", "drop", "cli"], input="n\n")
    assert kept.exit_code != 0 and "its 11 documents?" in kept.output
    assert runner.invoke(app, ["index", "drop", "cli", "--yes"]).exit_code == 0
