"""Building an index from precomputed token vectors (colpg.vector_shards, colpg.vector_build) on a real server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colpg import db
from colpg.cli import app
from colpg.collection import CollectionDocument
from colpg.encoder import Encoder
from colpg.errors import CollectionError, ConfigurationError, DocumentError, IndexExists
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.vector_build import VectorIndexer, sample_documents
from colpg.vector_shards import read_folder

CONFIG = IndexConfig(num_centroids=16, kmeans_niters=2, write_batch_size=5)
QUERIES = ["cancer cells and tumour growth", "vitamin D and bone density", "genome sequencing of bacteria"]


def write_shard(folder: Path, name: str, documents: Sequence[torch.Tensor], ids: Sequence[str], dtype: Any = np.float16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.tokens.npy", torch.cat(list(documents)).numpy().astype(dtype))
    np.save(folder / f"{name}.doclens.npy", np.array([len(d) for d in documents], dtype=np.int32))
    (folder / f"{name}.ids.txt").write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture(scope="module")
def vectors(encoder: Encoder, small_texts: list[str]) -> list[torch.Tensor]:
    """The 24 SciFact abstracts' token vectors, as the MiniLM encoder gives them."""
    return encoder.encode_documents(small_texts, progress=False)


@pytest.fixture
def shards(tmp_path: Path, vectors: list[torch.Tensor]) -> Path:
    """Two float16 shards: documents d0..d9 in a, d10..d23 in b."""
    folder = tmp_path / "shards"
    write_shard(folder, "a", vectors[:10], [f"d{i}" for i in range(10)])
    write_shard(folder, "b", vectors[10:], [f"d{i}" for i in range(10, 24)])
    return folder


def stored(url: str, name: str) -> dict[str, tuple[Any, ...]]:
    """Each document's text, codes, residuals and rerank payload, by external id."""
    with db.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.external_id, d.text, t.codes, t.residuals, r.payload FROM colpg.documents d"
            " JOIN colpg.indexes i ON i.id = d.index_id JOIN colpg.document_tokens t ON t.document_id = d.id"
            " LEFT JOIN colpg.rerank_vectors r ON r.document_id = d.id WHERE i.name = %(name)s",
            {"name": name},
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_a_two_shard_build_writes_what_the_indexer_writes_for_the_same_vectors(migrated_url: str, encoder: Encoder, shards: Path) -> None:
    built = VectorIndexer(encoder, CONFIG, url=migrated_url).index("vectors", shards)
    folder = read_folder(shards)
    same = {i: shard.vectors(d, d + 1) for shard in folder.shards for d, i in enumerate(shard.ids())}  # as the build read them
    indexer = Indexer(encoder, CONFIG, url=migrated_url)

    def precomputed(documents: Sequence[CollectionDocument]) -> list[torch.Tensor]:
        return [same[d.external_id] for d in documents]

    indexer._encode = precomputed  # type: ignore[method-assign]  # the shards' vectors, as bench/compare.py does
    reference = indexer.index("texts", [(f"d{i}", f"d{i}") for i in range(24)])

    ours, theirs = stored(migrated_url, "vectors"), stored(migrated_url, "texts")
    assert len(ours) == 24 and all(row[0] is None for row in ours.values())  # vectors only: no text
    assert {i: row[1:] for i, row in ours.items()} == {i: row[1:] for i, row in theirs.items()}
    for query in QUERIES:
        assert [(h.external_id, round(h.score, 5)) for h in built.search(query, k=5)] == [
            (h.external_id, round(h.score, 5)) for h in reference.search(query, k=5)
        ]
    assert built.info()["documents"] == 24 and built.record.config["build"]["vectors"] == str(shards.resolve())


def test_an_interrupted_build_resumes_to_the_rows_of_an_uninterrupted_one(
    migrated_url: str, encoder: Encoder, shards: Path, tmp_path: Path, vectors: list[torch.Tensor]
) -> None:
    budget = 400  # sample tokens: a few documents, so a bad vector can sit outside the sample
    picked = set(sample_documents(read_folder(shards).doclens(), max_tokens=budget, seed=CONFIG.seed).tolist())
    bad = next(d for d in range(20, 24) if d not in picked)  # in shard b's third batch (b holds d10..d23, 5 a batch)
    broken = [v.clone() for v in vectors[10:]]
    broken[bad - 10][1, 7] = float("nan")
    write_shard(shards, "b", broken, [f"d{i}" for i in range(10, 24)])

    builder = VectorIndexer(encoder, CONFIG, url=migrated_url, max_sample_tokens=budget)
    with pytest.raises(
        DocumentError, match=rf"document 'd{bad}' \(shard b, document {bad - 10}\) has a value that is not finite at token 1"
    ):
        builder.index("resumed", shards)
    with db.connect(migrated_url) as conn:
        status = conn.execute("SELECT status FROM colpg.indexes WHERE name = 'resumed'").fetchone()
    assert status == ("building",) and sorted(stored(migrated_url, "resumed"), key=lambda i: int(i[1:])) == [f"d{i}" for i in range(20)]

    other = tmp_path / "other"
    write_shard(other, "a", vectors[:3], ["x0", "x1", "x2"])
    with pytest.raises(IndexExists, match="used another collection"):
        builder.index("resumed", other)

    write_shard(shards, "b", vectors[10:], [f"d{i}" for i in range(10, 24)])  # fixed: same shapes and ids
    builder.index("resumed", shards)
    builder.index("uninterrupted", shards)
    resumed = stored(migrated_url, "resumed")
    assert len(resumed) == 24 and resumed == stored(migrated_url, "uninterrupted")


def test_the_sample_is_bounded_by_documents_and_tokens() -> None:
    doclens = np.full(100_000, 100)
    assert len(sample_documents(doclens, max_tokens=10**9, seed=1)) == 55_426  # sample_size(100_000)
    picked = sample_documents(doclens, max_tokens=5_050, seed=1)
    assert len(picked) == 50 and (np.diff(picked) > 0).all()
    assert len(sample_documents(doclens, max_tokens=10, seed=1)) == 1  # at least one document


def good(folder: Path) -> None:
    rng = np.random.default_rng(0)
    write_shard(folder, "a", [torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32)) for n in (2, 3)], ["p", "q"])
    write_shard(folder, "b", [torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32)) for n in (1, 4)], ["r", "s"], np.float32)


def remove(folder: Path, file: str) -> None:
    (folder / file).unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: remove(f, "b.ids.txt"), r"shard b in .* has no b\.ids\.txt"),
        (lambda f: remove(f, "a.tokens.npy"), r"shard a in .* has no a\.tokens\.npy"),
        (lambda f: np.save(f / "b.tokens.npy", np.zeros((5, 6), np.float32)), r"shard b holds 6-dim vectors; shard a holds 8-dim"),
        (lambda f: np.save(f / "a.tokens.npy", np.zeros((5, 8), np.float64)), r"holds a 2-d float64 array; expected \[tokens, dim\]"),
        (lambda f: np.save(f / "a.tokens.npy", np.zeros((5, 8, 1), np.float32)), r"holds a 3-d float32 array"),
        (lambda f: np.save(f / "a.doclens.npy", np.array([2, 2])), r"a\.doclens\.npy sums to 4 tokens; a\.tokens\.npy holds 5 rows"),
        (lambda f: np.save(f / "a.doclens.npy", np.array([5, 0])), r"gives document 1 0 tokens; expected at least 1"),
        (lambda f: np.save(f / "a.doclens.npy", np.array([2.0, 3.0])), r"holds a 1-d float64 array; expected \[documents\] integers"),
        (lambda f: (f / "a.doclens.npy").write_text("no"), r"cannot read .*a\.doclens\.npy as a \.npy array"),
        (lambda f: (f / "a.ids.txt").write_text("p\nq\nextra\n"), r"a\.ids\.txt holds 3 ids; a\.doclens\.npy counts 2 documents"),
        (lambda f: (f / "a.ids.txt").write_text("p\n \n"), r"a\.ids\.txt line 2 holds ' '; expected a non-empty id"),
        (lambda f: (f / "b.ids.txt").write_text("r\np\n"), r"id 'p' is given twice: a\.ids\.txt line 1 and b\.ids\.txt line 2"),
    ],
)
def test_a_bad_folder_is_refused_up_front_naming_the_shard(tmp_path: Path, damage: Any, message: str) -> None:
    good(tmp_path)
    assert read_folder(tmp_path).documents == 4
    damage(tmp_path)
    with pytest.raises(CollectionError, match=message):
        read_folder(tmp_path)


def test_a_folder_without_shards_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="is not a folder"):
        read_folder(tmp_path / "absent")
    with pytest.raises(CollectionError, match="holds no vector shards"):
        read_folder(tmp_path)


def test_vectors_are_normalised_and_a_zero_vector_names_its_document(tmp_path: Path) -> None:
    good(tmp_path)
    shard = read_folder(tmp_path).shards[1]
    assert torch.allclose(shard.vectors(0, 2).norm(dim=1), torch.ones(5))
    tokens = np.load(tmp_path / "b.tokens.npy")
    tokens[3] = 0
    np.save(tmp_path / "b.tokens.npy", tokens)
    with pytest.raises(DocumentError, match=r"document 's' \(shard b, document 1\) has a zero vector at token 2"):
        read_folder(tmp_path).shards[1].vectors(1, 2)


def test_a_model_of_another_dim_is_refused(tmp_path: Path, encoder: Encoder) -> None:
    good(tmp_path)
    with pytest.raises(ConfigurationError, match="gives 384-dim vectors; the shards in .* hold 8-dim vectors"):
        VectorIndexer(encoder, CONFIG, url="postgresql://unused").index("x", tmp_path)


runner = CliRunner()


def test_cli_builds_from_vectors(migrated_url: str, minilm_path: Path, tmp_path: Path, vectors: list[torch.Tensor]) -> None:
    folder = tmp_path / "shards"
    write_shard(folder, "only", vectors[:6], [f"d{i}" for i in range(6)])
    result = runner.invoke(app, ["index", "create", "cli", "--vectors", str(folder), "--model", str(minilm_path), "--precision", "none"])
    assert result.exit_code == 0, result.output
    assert "indexed 6 documents" in result.output and "into 'cli'" in result.output
    index = Index("cli", url=migrated_url)
    assert index.record.status == "ready" and index.ids() == {f"d{i}" for i in range(6)} and index.texts(["d0"]) == {"d0": ""}


@pytest.mark.parametrize(("sources", "found"), [([], "neither"), (["--collection", "README.md", "--vectors", "."], "both")])
def test_cli_wants_exactly_one_source(sources: list[str], found: str, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)
    result = runner.invoke(app, ["index", "create", "x", "--model", "unused", *sources])
    assert result.exit_code == 1
    assert f"give --collection FILE or --vectors FOLDER, exactly one; found {found}" in result.output
