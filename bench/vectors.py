"""The token vectors every contender of compare.py is fed: encoded once per dataset, cached, and assembled into larger collections.

Encoding SciFact takes minutes on a CPU, so each dataset's vectors are stored under
bench/results/cache and reused until the model or the encoder settings change.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from colpg.collection import read_collection
from colpg.encoder import Encoder
from colpg.evaluate import read_qrels, read_queries

CACHE = Path(__file__).resolve().parent / "results" / "cache"


@dataclass
class Vectors:
    """One collection's token vectors, stacked, with the queries that search it."""

    name: str
    ids: list[str]
    tokens: torch.Tensor  # [n_tokens, dim] float32, the encoder's original vectors
    doclens: list[int]
    qids: list[str]
    queries: torch.Tensor  # [n_queries, query_maxlen, dim]
    qrels: dict[str, dict[str, int]]

    def document(self, i: int) -> torch.Tensor:
        start = self.offsets[i]
        return self.tokens[start : start + self.doclens[i]]

    @cached_property
    def offsets(self) -> list[int]:
        """Where each document's first token is in ``tokens``."""
        return [0, *itertools.accumulate(self.doclens)][:-1]


def _key(dataset: Path, encoder: Encoder) -> str:
    settings = json.dumps([encoder.name, str(encoder.settings), str(dataset.resolve())], sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


def load(dataset: Path, encoder: Encoder) -> Vectors:
    """The dataset's documents and judged queries, encoded (from the cache when it holds them)."""
    path = CACHE / f"{dataset.name}-{_key(dataset, encoder)}.pt"
    qrels = read_qrels(dataset / "qrels.tsv")
    if path.is_file():
        saved = torch.load(path)
    else:
        corpus = read_collection(dataset / "corpus.jsonl")
        texts = read_queries(dataset / "queries.jsonl")
        qids = [q for q in texts if q in qrels]
        tokens, doclens = encoder.encode_documents_flat([d.text for d in corpus], progress=True)
        saved = {
            "ids": [d.external_id for d in corpus],
            "tokens": tokens,
            "doclens": doclens.tolist(),
            "qids": qids,
            "queries": encoder.encode_queries([texts[q] for q in qids]),
        }
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(saved, path)
    return Vectors(dataset.name, saved["ids"], saved["tokens"], saved["doclens"], saved["qids"], saved["queries"], qrels)


def assemble(pool: list[Vectors], documents: int, seed: int = 0) -> Vectors:
    """A synthetic collection of ``documents`` documents built from real token vectors.

    Each document takes the length of a real document drawn at random from the pool, and fills
    it with two to four contiguous spans of tokens cut from other real documents (a passage
    keeps its neighbouring tokens, so the clusters and the within-document structure stay
    real, while no document repeats a real one). Queries are the first pool's, with no qrels.
    """
    generator = torch.Generator().manual_seed(seed)
    sources = [(v, i) for v in pool for i in range(len(v.doclens)) if v.doclens[i] >= 8]
    lengths = [v.doclens[i] for v, i in sources]
    parts: list[torch.Tensor] = []
    doclens: list[int] = []
    for _ in range(documents):
        length = lengths[int(torch.randint(len(lengths), (1,), generator=generator))]
        spans = int(torch.randint(2, 5, (1,), generator=generator))
        cuts = sorted(torch.randint(1, length, (spans - 1,), generator=generator).tolist())
        total = 0
        for size in [b - a for a, b in zip([0, *cuts], [*cuts, length], strict=True) if b > a]:
            vectors, i = sources[int(torch.randint(len(sources), (1,), generator=generator))]
            source = vectors.document(i)
            size = min(size, len(source))
            start = int(torch.randint(len(source) - size + 1, (1,), generator=generator))
            parts.append(source[start : start + size])
            total += size
        doclens.append(total)
    first = pool[0]
    return Vectors(f"assembled-{documents}", [f"a{i}" for i in range(documents)], torch.cat(parts), doclens, first.qids, first.queries, {})


def subset(vectors: Vectors, documents: int) -> Vectors:
    """The first ``documents`` documents, with all the queries and qrels."""
    end = sum(vectors.doclens[:documents])
    return Vectors(
        vectors.name,
        vectors.ids[:documents],
        vectors.tokens[:end],
        vectors.doclens[:documents],
        vectors.qids,
        vectors.queries,
        vectors.qrels,
    )


def export(vectors: Vectors, folder: Path, shard_documents: int = 100_000) -> list[str]:
    """Write ``vectors`` as float16 shards of ``shard_documents`` documents (colpg.vector_shards' format); their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for first in range(0, len(vectors.doclens), shard_documents):
        last = min(first + shard_documents, len(vectors.doclens))
        name = f"{len(names):05d}"
        start, end = vectors.offsets[first], vectors.offsets[last - 1] + vectors.doclens[last - 1]
        np.save(folder / f"{name}.tokens.npy", vectors.tokens[start:end].to(torch.float16).numpy())
        np.save(folder / f"{name}.doclens.npy", np.array(vectors.doclens[first:last], dtype=np.int32))
        (folder / f"{name}.ids.txt").write_text("".join(f"{i}\n" for i in vectors.ids[first:last]))
        names.append(name)
    return names
