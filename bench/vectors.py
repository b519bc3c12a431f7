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
    #: for an assembled collection, where its documents' tokens come from in the pool
    assembly: Assembly | None = None
    #: for a collection written as float16 shards (``assemble_to_folder``), their folder
    folder: Path | None = None

    def document(self, i: int) -> torch.Tensor:
        start = self.offsets[i]
        return self.tokens[start : start + self.doclens[i]]

    @cached_property
    def offsets(self) -> list[int]:
        """Where each document's first token is in ``tokens``."""
        return [0, *itertools.accumulate(self.doclens)][:-1]

    def exact_tokens(self, first: int, stop: int) -> torch.Tensor:
        """Documents ``first .. stop-1``'s original float32 vectors: cut from the pool where ``tokens``
        is a float16 shard (``assemble_to_folder``), else sliced from ``tokens``."""
        if self.folder is not None and self.assembly is not None:
            return self.assembly.tokens(first, stop)
        end = self.offsets[stop - 1] + self.doclens[stop - 1]
        return self.tokens[self.offsets[first] : end].float()


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


#: Tokens of the float32 chunks that exact scoring and assemble_to_folder materialise at a time (~1.5 GB at dim 384).
CHUNK_TOKENS = 1_000_000


@dataclass
class Assembly:
    """Which token spans of which pool members make each assembled document (``assemble``'s draw)."""

    pool: list[Vectors]
    #: per document, its spans: (pool member, first row in that member's ``tokens``, rows)
    spans: list[list[tuple[int, int, int]]]

    @cached_property
    def doclens(self) -> list[int]:
        return [sum(size for _, _, size in spans) for spans in self.spans]

    def tokens(self, first: int, stop: int) -> torch.Tensor:
        """Documents ``first .. stop-1``'s original float32 vectors. Shapes: -> [their tokens, dim]."""
        return torch.cat([self.pool[m].tokens[row : row + size] for spans in self.spans[first:stop] for m, row, size in spans])


def draw(pool: list[Vectors], documents: int, seed: int = 0) -> Assembly:
    """The spans of a synthetic collection of ``documents`` documents built from real token vectors.

    Each document takes the length of a real document drawn at random from the pool, and fills
    it with two to four contiguous spans of tokens cut from other real documents (a passage
    keeps its neighbouring tokens, so the clusters and the within-document structure stay
    real, while no document repeats a real one). Deterministic for a pool and seed.
    """
    generator = torch.Generator().manual_seed(seed)
    sources = [(m, i) for m, v in enumerate(pool) for i in range(len(v.doclens)) if v.doclens[i] >= 8]
    lengths = [pool[m].doclens[i] for m, i in sources]
    spans: list[list[tuple[int, int, int]]] = []
    for _ in range(documents):
        length = lengths[int(torch.randint(len(lengths), (1,), generator=generator))]
        count = int(torch.randint(2, 5, (1,), generator=generator))
        cuts = sorted(torch.randint(1, length, (count - 1,), generator=generator).tolist())
        mine: list[tuple[int, int, int]] = []
        for size in [b - a for a, b in zip([0, *cuts], [*cuts, length], strict=True) if b > a]:
            m, i = sources[int(torch.randint(len(sources), (1,), generator=generator))]
            source_length = pool[m].doclens[i]
            size = min(size, source_length)
            start = int(torch.randint(source_length - size + 1, (1,), generator=generator))
            mine.append((m, pool[m].offsets[i] + start, size))
        spans.append(mine)
    return Assembly(pool, spans)


def assemble(pool: list[Vectors], documents: int, seed: int = 0) -> Vectors:
    """``draw``'s collection in memory (float32). Queries are the first pool's, with no qrels."""
    assembly = draw(pool, documents, seed)
    return _assembled(assembly, assembly.tokens(0, documents), None)


def _assembled(assembly: Assembly, tokens: torch.Tensor, folder: Path | None) -> Vectors:
    """An assembled collection: ids a0, a1, ..., the first pool member's queries, no qrels."""
    documents, first = len(assembly.spans), assembly.pool[0]
    ids = [f"a{i}" for i in range(documents)]
    return Vectors(f"assembled-{documents}", ids, tokens, assembly.doclens, first.qids, first.queries, {}, assembly=assembly, folder=folder)


def assemble_to_folder(pool: list[Vectors], documents: int, folder: Path, seed: int = 0) -> Vectors:
    """``draw``'s collection written once as one float16 shard in ``folder`` (colpg.vector_shards' format), memory-mapped.

    For collections whose float32 tokens do not fit in memory: the shard is written a chunk at a
    time and reused when ``folder`` already holds it (a ``complete`` file marks a finished write).
    ``tokens`` is the float16 file; exact scoring reads the original float32 vectors from the pool
    (``exact_tokens``).
    """
    assembly = draw(pool, documents, seed)
    doclens = assembly.doclens
    path, marker = folder / "00000.tokens.npy", folder / "complete"
    if not marker.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(sum(doclens), pool[0].tokens.shape[1]))
        written = 0
        for first, stop in chunks(doclens):
            rows = assembly.tokens(first, stop).to(torch.float16).numpy()
            out[written : written + len(rows)] = rows
            written += len(rows)
        out.flush()
        del out
        np.save(folder / "00000.doclens.npy", np.array(doclens, dtype=np.int32))
        (folder / "00000.ids.txt").write_text("".join(f"a{i}\n" for i in range(documents)))
        marker.write_text(f"{documents} documents, seed {seed}\n")
    tokens = torch.from_numpy(np.load(path, mmap_mode="c"))  # copy-on-write: a writable view, never written
    return _assembled(assembly, tokens, folder)


def chunks(doclens: list[int], max_tokens: int = CHUNK_TOKENS) -> list[tuple[int, int]]:
    """Consecutive document ranges ``(first, stop)`` of at most ``max_tokens`` tokens (at least one document each).

    >>> chunks([3, 3, 3, 5], max_tokens=6)
    [(0, 2), (2, 3), (3, 4)]
    """
    ranges: list[tuple[int, int]] = []
    first, total = 0, 0
    for i, length in enumerate(doclens):
        if i > first and total + length > max_tokens:
            ranges.append((first, i))
            first, total = i, 0
        total += length
    if first < len(doclens):
        ranges.append((first, len(doclens)))
    return ranges


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
