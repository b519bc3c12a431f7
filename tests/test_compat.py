"""A script written for Stanford ColBERT runs on colpg by changing only its import lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

COLBERT_SCRIPT = '''
with Run().context(RunConfig(nranks=1, experiment="notebook")):
    config = ColBERTConfig(doc_maxlen=8192, nbits=2, kmeans_niters=4)
    indexer = Indexer(checkpoint=checkpoint_path, config=config)
    indexer.index(name="notebook.nbits2", collection=docs, overwrite=True)

checkpoint = Checkpoint(checkpoint_path, colbert_config=ColBERTConfig(query_maxlen=32))
query_vectors = checkpoint.queryFromText(["How do glaciers change?"], bsize=16)
document_vectors = checkpoint.docFromText(docs, bsize=16, keep_dims=False)

with Run().context(RunConfig(experiment="notebook")):
    searcher = Searcher(index="notebook.nbits2", config=ColBERTConfig(query_maxlen=128))
    results = searcher.search("How do glaciers change?", k=3)
    best_text = searcher.collection[results[0][0]]
    ranking = searcher.search_all({7: "bread recipes", 8: "particles in physics"}, k=2)
'''

IMPORTS = "from colpg.compat import Checkpoint, ColBERTConfig, Indexer, Run, RunConfig, Searcher\n"

DOCS = [
    "Glaciers retreat when the climate warms and summers lengthen.",
    "Sourdough bread rises thanks to wild yeast and lactic bacteria.",
    "Quarks are bound by the strong force inside protons.",
    "The zebra herd crossed the river at dawn.",
    "Ice sheets in Greenland lose mass every year.",
    "A pizza dough needs flour, water, salt and yeast.",
]


def test_colbert_script_runs_unchanged_but_for_imports(migrated_url: str, minilm_path: Path) -> None:
    namespace: dict[str, object] = {"checkpoint_path": str(minilm_path), "docs": DOCS}
    exec(IMPORTS + COLBERT_SCRIPT, namespace)  # noqa: S102 - the script is the test's own text

    pids, ranks, scores = namespace["results"]  # type: ignore[misc]
    assert ranks == [1, 2, 3] and len(pids) == 3 and all(isinstance(p, int) for p in pids)
    assert set(pids[:2]) == {0, 4}  # the two texts about ice
    assert scores == sorted(scores, reverse=True)
    assert namespace["best_text"] == DOCS[pids[0]]
    collection = namespace["searcher"].collection  # type: ignore[attr-defined]
    assert len(collection) == len(DOCS) and list(collection) == list(range(len(DOCS))) and collection[3] == DOCS[3]
    with pytest.raises(KeyError):
        collection[99]

    query_vectors = namespace["query_vectors"]
    assert isinstance(query_vectors, torch.Tensor) and query_vectors.shape == (1, 32, 384)
    document_vectors = namespace["document_vectors"]
    assert isinstance(document_vectors, list) and len(document_vectors) == len(DOCS)

    ranking = namespace["ranking"].todict()  # type: ignore[attr-defined]
    assert set(ranking) == {7, 8}
    assert ranking[7][0][0] in (1, 5) and ranking[8][0][0] == 2


def test_unknown_infrastructure_settings_are_accepted() -> None:
    from colpg.compat import ColBERTConfig

    config = ColBERTConfig(doc_maxlen=300, nranks=4, root="/experiments", gpus=0)
    assert config.doc_maxlen == 300 and config.ignored == {"nranks": 4, "root": "/experiments", "gpus": 0}
    assert config.encoder_settings() == {"doc_maxlen": 300}
