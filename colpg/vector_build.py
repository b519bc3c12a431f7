"""Build an index from precomputed token vectors (colpg.vector_shards), streaming, in bounded memory.

``VectorIndexer(model, config).index(name, folder)`` does what colpg.indexer does without
encoding: k-means on a bounded random sample of the documents, then compress and COPY in
batches that each commit whole; an interrupted build resumes at the first batch it had not
committed (the folder's fingerprint must match). The model encodes queries only: its dim must
be the shards'. Documents get NULL texts: ``Index.update`` of one needs its text.

Peak memory does not grow with the collection's tokens. With ``S`` sample tokens (at most
``max_sample_tokens``), ``k`` centroids, ``B`` tokens in the largest batch, ``D`` documents
in all and ``E`` in the largest shard, at dim ``d``, beyond the interpreter and torch:

    RSS ≈ max(9·S·d, ~40·B·d + 256 MiB) + 4·k·d + 24·D + ~100·E

k-means holds the float32 sample, the shuffled copy it trains on and faiss's work (2.3x the
sample, measured), and frees them before writing; a batch is read, normalised, compressed (the
256 MiB is codec.ASSIGN_BATCH_ELEMENTS's block of scores) and COPYed; the codec is ``4·k·d``;
per document, the doclens, id hashes and sampling permutation; per document of one shard, its ids.

The default ``max_sample_tokens`` (1M) keeps the float32 sample at 1.5 GB at dim 384.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import torch

from colpg import db, fulltext, store
from colpg.codec import ResidualCodec, num_centroids_for, sample_size
from colpg.collection import CollectionDocument
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError
from colpg.index import Index
from colpg.indexer import BuildStats, IndexConfig, create_build, resumable_build, train_codec
from colpg.progress import bar as progress_bar
from colpg.stores import RerankStore
from colpg.vector_shards import Shard, VectorFolder, read_folder

__all__ = ["MAX_SAMPLE_TOKENS", "VectorIndexer", "sample_documents"]

logger = logging.getLogger(__name__)

#: Default cap on the k-means sample's tokens: 1.5 GB of float32 at dim 384.
MAX_SAMPLE_TOKENS = 1_000_000


def sample_documents(doclens: np.ndarray, *, max_tokens: int, seed: int) -> np.ndarray:
    """The k-means sample: documents drawn at random (seeded), up to ColBERTv2's ``sample_size``
    documents and at most ``max_tokens`` tokens (at least one document), in collection order.

    Shapes: doclens [documents] -> [sampled] int64, ascending.
    """
    order = np.random.default_rng(seed).permutation(len(doclens))
    within = int(np.searchsorted(np.cumsum(doclens[order]), max_tokens, side="right"))
    return np.sort(order[: max(1, min(sample_size(len(doclens)), within))])


class VectorIndexer:
    """Builds an index of precomputed token vectors; ``model`` encodes the index's queries."""

    def __init__(
        self,
        model: str | Path | Encoder,
        config: IndexConfig | None = None,
        *,
        url: str | None = None,
        max_sample_tokens: int = MAX_SAMPLE_TOKENS,
    ) -> None:
        if max_sample_tokens < 1:
            raise ConfigurationError(f"max_sample_tokens must be positive, got {max_sample_tokens}")
        self.config = config or IndexConfig()
        self.url = url
        self.max_sample_tokens = max_sample_tokens
        self.encoder = model if isinstance(model, Encoder) else Encoder.from_pretrained(model, self.config.encoder_settings())
        self.stats = BuildStats()

    def _train(self, folder: VectorFolder) -> tuple[ResidualCodec, RerankStore]:
        """k-means on the sample (read shard by shard into one preallocated tensor), then the rerank store."""
        doclens = folder.doclens()
        picked = sample_documents(doclens, max_tokens=self.max_sample_tokens, seed=self.config.seed)
        sample = torch.empty(int(doclens[picked].sum()), folder.dim)
        filled, first = 0, 0
        for shard in progress_bar(folder.shards, desc="reading the k-means sample", unit="shard"):
            mine = picked[(picked >= first) & (picked < first + shard.documents)] - first
            for run in np.split(mine, np.flatnonzero(np.diff(mine) != 1) + 1) if len(mine) else []:  # consecutive documents: one read
                vectors = shard.vectors(int(run[0]), int(run[-1]) + 1)
                sample[filled : filled + len(vectors)] = vectors
                filled += len(vectors)
            first += shard.documents
        k = self.config.num_centroids or num_centroids_for(folder.tokens)
        logger.info("k-means: %d centroids from %d sample tokens (%d documents)", k, len(sample), len(picked))
        started = time.perf_counter()
        codec, rerank = train_codec(sample, self.config, k, self.encoder.padding_direction())
        self.stats.train_s += time.perf_counter() - started
        return codec, rerank

    def index(self, name: str, folder: str | Path, overwrite: bool = False) -> Index:
        """Build index ``name`` from the shards in ``folder``; resume an interrupted build of the same folder.

        Raises:
            CollectionError: the folder is not one of valid shards (nothing is written).
            ConfigurationError: the model's dim is not the shards'.
            DocumentError: a token is not finite or zero (its batch and the ones after it are not written).
            IndexExists: the index is built already and ``overwrite`` is False, or an unfinished build had another folder.
        """
        shards = read_folder(folder)
        if self.encoder.dim != shards.dim:
            raise ConfigurationError(
                f"the model {self.encoder.name} gives {self.encoder.dim}-dim vectors; the shards in {shards.path} hold {shards.dim}-dim vectors"
            )
        self.stats = BuildStats(documents=shards.documents, tokens=shards.tokens)
        url = self.url or db.database_url()
        with db.connect(url, autocommit=True) as conn:
            if self.config.language is not None:
                fulltext.check_language(conn, self.config.language)
            record = resumable_build(
                conn, name, fingerprint=shards.fingerprint, model=self.encoder.name, nbits=self.config.nbits, overwrite=overwrite
            )
            if record is None:
                codec, rerank = self._train(shards)
                build = {
                    "documents": shards.documents,
                    "fingerprint": shards.fingerprint,
                    "vectors": str(shards.path),
                    "max_sample_tokens": self.max_sample_tokens,
                }
                index_id = create_build(conn, name, self.encoder, self.config, codec, rerank, build)
            else:
                index_id = record.id
                codec, rerank = store.load_codec(conn, record, self.encoder.device)
                logger.info("resuming the build of %s from %s", name, shards.path)
            self._write(conn, name, index_id, shards, codec.to(self.encoder.device), rerank)
            store.finish_build(conn, index_id)
        return Index(name, url=url, encoder=self.encoder)

    def _write(
        self, conn: psycopg.Connection[Any], name: str, index_id: int, shards: VectorFolder, codec: ResidualCodec, rerank: RerankStore
    ) -> None:
        """Compress and COPY every batch not committed yet, one transaction each."""
        ids: list[str] = []
        current: Shard | None = None
        with progress_bar(total=shards.tokens, desc=f"indexing {name}", unit="tok", unit_scale=True) as bar:
            for shard, batch in shards.batches(self.config.write_batch_size):
                if shard is not current:
                    current, ids = shard, shard.ids()
                tokens = int(shard.starts[batch.stop] - shard.starts[batch.start])
                if store.existing_ids(conn, index_id, [ids[batch.start]]):  # batches commit whole: this one is written
                    bar.update(tokens)
                    continue
                flat = shard.vectors(batch.start, batch.stop)
                vectors = list(torch.split(flat, shard.doclens[batch.start : batch.stop].tolist()))
                documents = [CollectionDocument(ids[i], "") for i in batch]
                started = time.perf_counter()
                with conn.transaction():
                    store.write_documents(conn, index_id, documents, vectors, codec, rerank, with_text=False)
                self.stats.write_s += time.perf_counter() - started
                bar.update(tokens)
