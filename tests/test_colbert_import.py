"""Importing a Stanford ColBERT (PLAID) index: colpg's MaxSim over the imported tokens equals PLAID's.

tests/data/plaid-mini was built by colbert-ai itself (tests/data/make_plaid_fixture.py); its
expected.json holds each query's MaxSim over PLAID's own decompressed vectors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from colpg.cli import app
from colpg.colbert_import import bit_order_table, import_colbert
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, IndexExists, PlaidIndexError
from colpg.index import Index

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "plaid-mini"
PLAID_PYTHON = Path(__file__).resolve().parents[1] / ".venv-plaid" / "bin" / "python"
#: PLAID's and colpg's decompression are the same float32 arithmetic on the CPU; fp16 stores round.
TOLERANCE = {"none": 1e-5, "fp16": 1e-3, "int8": 1e-2}


def expected(folder: Path = FIXTURE) -> tuple[torch.Tensor, torch.Tensor]:
    """PLAID's query vectors [queries, q, dim] and scores [queries, passages]."""
    data = json.loads((folder / "expected.json").read_text())
    return torch.load(folder / data["query_vectors"], weights_only=True), torch.tensor(data["scores"])


def exact_scores(index: Index, queries: torch.Tensor, ids: list[str]) -> torch.Tensor:
    """colpg's exact MaxSim of each query against every document, in ``ids`` order."""
    rows = []
    for query in queries:
        ranked = {r.external_id: r.score for r in index.searcher.search_vectors(query, len(ids), exact=True)}
        rows.append([ranked[i] for i in ids])
    return torch.tensor(rows)


@pytest.mark.parametrize("precision", ["none", "fp16", "int8"])
def test_imported_maxsim_equals_plaid(migrated_url: str, encoder: Encoder, precision: str) -> None:
    queries, plaid = expected()
    index = import_colbert("plaid", FIXTURE, collection=FIXTURE / "collection.tsv", model=encoder, precision=precision)
    ids = [str(pid) for pid in range(plaid.shape[1])]
    assert index.ids() == set(ids) and index.record.status == "ready"
    info = index.info()
    assert (info["nbits"], info["precision"], info["tokens"], info["centroids"]) == (2, precision, 2083, 512)
    assert index.texts(["0"])["0"].startswith("Microstructural development of human newborn")
    torch.testing.assert_close(exact_scores(index, queries, ids), plaid, rtol=TOLERANCE[precision], atol=0)
    for query, scores in zip(queries, plaid, strict=True):
        assert index.searcher.search_vectors(query, 3)[0].external_id == str(int(scores.argmax()))


def test_plaid_bit_order_is_converted() -> None:
    """PLAID writes bucket 1 (0b01) of dimension 0 as bits 1,0; colpg as 0,1."""
    assert bit_order_table(2)[0b10_00_00_00].item() == 0b01_00_00_00
    assert bit_order_table(4)[0b1000_0001].item() == 0b0001_1000
    assert torch.equal(bit_order_table(1), torch.arange(256, dtype=torch.uint8))


def test_cli_imports_with_the_collection_ids(migrated_url: str, minilm_path: Path) -> None:
    jsonl = DATA / "scifact-24.jsonl"
    args = ["index", "import-colbert", "scifact", str(FIXTURE), "--collection", str(jsonl), "--model", str(minilm_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "imported 24 documents (2083 tokens, 512 centroids) into 'scifact'" in result.output
    queries, plaid = expected()
    first = json.loads(jsonl.read_text().splitlines()[int(plaid[0].argmax())])["_id"]
    index = Index("scifact")
    assert index.record.config["encoder"]["doc_maxlen"] == 96  # PLAID's settings, read from its metadata
    assert index.searcher.search_vectors(queries[0], 1)[0].external_id == first
    assert CliRunner().invoke(app, args).exit_code == 1  # exists already


def test_import_without_collection_and_overwrite(migrated_url: str, encoder: Encoder) -> None:
    index = import_colbert("bare", FIXTURE, model=encoder)
    assert index.texts(["5"]) == {"5": ""} and len(index.ids()) == 24
    with pytest.raises(IndexExists, match="overwrite"):
        import_colbert("bare", FIXTURE, model=encoder)
    assert len(import_colbert("bare", FIXTURE, model=encoder, overwrite=True).ids()) == 24


def test_interrupted_import_resumes(migrated_url: str, encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    from colpg import colbert_import

    real = colbert_import.read_chunk

    def fail_second(folder: Any, number: int, offset: int) -> Any:
        if number == 1:
            raise RuntimeError("interrupted")
        return real(folder, number, offset)

    monkeypatch.setattr(colbert_import, "read_chunk", fail_second)
    with pytest.raises(RuntimeError):
        import_colbert("resumed", FIXTURE, model=encoder, batch_size=5)
    assert len(Index("resumed").ids()) == 16 and Index("resumed").record.status == "building"
    monkeypatch.setattr(colbert_import, "read_chunk", real)
    queries, plaid = expected()
    index = import_colbert("resumed", FIXTURE, model=encoder, batch_size=7)
    ids = [str(pid) for pid in range(24)]
    torch.testing.assert_close(exact_scores(index, queries, ids), plaid, rtol=TOLERANCE["none"], atol=0)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A copy of the fixture to break."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "plaid"))


def _edit_metadata(folder: Path, **config: Any) -> None:
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["config"].update(config)
    (folder / "metadata.json").write_text(json.dumps(metadata))


def test_not_a_colbert_index(tmp_path: Path, encoder: Encoder) -> None:
    with pytest.raises(PlaidIndexError, match=rf"{tmp_path} is not a ColBERT index: it has no metadata.json"):
        import_colbert("x", tmp_path, model=encoder)
    (tmp_path / "plan.json").write_text("{}")
    with pytest.raises(PlaidIndexError, match="plan.json but no metadata.json: ColBERT's indexing of it did not finish"):
        import_colbert("x", tmp_path, model=encoder)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(PlaidIndexError, match=rf"cannot read {tmp_path / 'metadata.json'}"):
        import_colbert("x", tmp_path, model=encoder)


def test_missing_chunk_names_the_file(broken: Path, encoder: Encoder) -> None:
    (broken / "1.residuals.pt").unlink()
    with pytest.raises(PlaidIndexError, match=rf"chunk 1 of 2 is missing: {broken / '1.residuals.pt'} does not exist"):
        import_colbert("x", broken, model=encoder)


def test_nbits_mismatch_names_the_file(broken: Path, encoder: Encoder) -> None:
    _edit_metadata(broken, nbits=4)
    with pytest.raises(PlaidIndexError, match=rf"{broken / 'buckets.pt'} holds 3 bucket cutoffs and 4 values; nbits=4 .* needs 15 and 16"):
        import_colbert("x", broken, model=encoder)


def test_residual_width_mismatch_names_the_file(broken: Path, migrated_url: str, encoder: Encoder) -> None:
    residuals = torch.load(broken / "1.residuals.pt", weights_only=True)
    torch.save(residuals[:, :48].clone(), broken / "1.residuals.pt")
    with pytest.raises(PlaidIndexError, match=rf"{broken / '1.residuals.pt'} holds torch.uint8 residuals of 48 bytes per token; .* 96"):
        import_colbert("x", broken, model=encoder)


def test_collection_and_model_must_fit(broken: Path, encoder: Encoder, tmp_path: Path) -> None:
    short = tmp_path / "short.tsv"
    short.write_text("0\tone passage\n")
    with pytest.raises(PlaidIndexError, match="holds 1 documents; the ColBERT index holds 24 passages"):
        import_colbert("x", broken, collection=short, model=encoder)
    with pytest.raises(ConfigurationError, match="precision must be one of none, int8, fp16"):
        import_colbert("x", broken, model=encoder, precision="residual4")
    _edit_metadata(broken, dim=128)
    with pytest.raises(PlaidIndexError, match=r"holds 384-dim centroids; .* says dim=128"):
        import_colbert("x", broken, model=encoder)


@pytest.mark.slow
@pytest.mark.skipif(not PLAID_PYTHON.is_file(), reason="no .venv-plaid with colbert-ai (make bench-setup)")
def test_fresh_plaid_build_imports(migrated_url: str, encoder: Encoder, tmp_path: Path) -> None:
    """colbert-ai builds the fixture again (k-means differs run to run); the import still matches it."""
    output = tmp_path / "plaid-fresh"
    subprocess.run(
        [str(PLAID_PYTHON), str(DATA / "make_plaid_fixture.py"), str(output)],
        check=True,
        capture_output=True,
        timeout=240,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    queries, plaid = expected(output)
    index = import_colbert("fresh", output, collection=output / "collection.tsv", model=encoder)
    ids = [str(pid) for pid in range(plaid.shape[1])]
    torch.testing.assert_close(exact_scores(index, queries, ids), plaid, rtol=TOLERANCE["none"], atol=0)
