"""Build colpg indexes: ``Indexer(checkpoint, config).index(name, collection)``.

A build trains the codec on a sample of the collection, then writes the documents in
batches that each commit whole. The codec is committed with the index row before any
document, so an interrupted build resumes at the first batch it had not committed and
ends with exactly the rows of an uninterrupted one (batches are fixed slices of the
collection, encoded the same way each time). The built index is a colpg.index.Index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import torch

from colpg import db, fulltext, store
from colpg.codec import (
    ResidualCodec,
    num_centroids_for,
    sample_size,
    train_residual_codec,
)
from colpg.collection import CollectionDocument, documents_from, read_collection
from colpg.constants import NBITS
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, DocumentError, IndexExists
from colpg.index import Index
from colpg.progress import bar as progress_bar
from colpg.store import IndexRecord
from colpg.stores import KINDS, RerankStore, train_store

__all__ = ["BuildStats", "IndexConfig", "Indexer", "create_build", "resumable_build", "train_codec", "unfinished_build"]

logger = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """Where a build's time went, for progress reports and benchmarks."""

    documents: int = 0
    tokens: int = 0
    encode_s: float = 0.0
    train_s: float = 0.0
    write_s: float = 0.0


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built. ``precision`` picks the rerank store: none, residual4, int8 or fp16."""

    nbits: int = 2
    precision: str = "int8"
    kmeans_niters: int = 4
    num_centroids: int | None = None
    seed: int = 12345
    write_batch_size: int = 256
    encode_batch_size: int = 32
    #: Bytes of the k-means sample's encodings kept to be written without encoding them again.
    sample_keep_bytes: int = 2 << 30
    doc_maxlen: int | None = None
    query_maxlen: int | None = None
    #: Text search configuration of the full-text column (any installed in PostgreSQL); None: the schema's default.
    language: str | None = None

    def __post_init__(self) -> None:
        if self.nbits not in NBITS:
            raise ConfigurationError(f"nbits must be one of {', '.join(map(str, NBITS))}, got {self.nbits!r}")
        if self.precision not in KINDS:
            raise ConfigurationError(f"precision must be one of {', '.join(KINDS)}, got {self.precision!r}")
        if self.precision == "residual4" and self.nbits == 4:
            raise ConfigurationError("precision 'residual4' adds nothing to nbits=4 codes; choose int8, fp16 or none")
        if self.write_batch_size < 1 or self.encode_batch_size < 1 or self.kmeans_niters < 1:
            raise ConfigurationError("batch sizes and kmeans_niters must be positive")

    def encoder_settings(self) -> dict[str, Any]:
        return {k: v for k, v in (("doc_maxlen", self.doc_maxlen), ("query_maxlen", self.query_maxlen)) if v is not None}


def _fingerprint(documents: Sequence[CollectionDocument]) -> str:
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.external_id.encode() + b"\x1f" + document.text.encode() + b"\x1e")
    return digest.hexdigest()


def _chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def unfinished_build(conn: psycopg.Connection[Any], name: str, overwrite: bool) -> IndexRecord | None:
    """The unfinished build of ``name`` (status building), or None when there is none to resume:
    no index of that name, or one dropped because ``overwrite`` is set.

    Raises:
        IndexExists: ``name`` is a finished index and ``overwrite`` is False.
    """
    record = store.find_index(conn, name)
    if record is None:
        return None
    if overwrite:
        with conn.transaction():
            store.drop_index(conn, name)
        return None
    if record.status == "ready":
        raise IndexExists(f"index {name!r} exists already; pass overwrite=True (or --overwrite) to replace it")
    return record


def resumable_build(
    conn: psycopg.Connection[Any], name: str, *, fingerprint: str, model: str, nbits: int, overwrite: bool
) -> IndexRecord | None:
    """The unfinished build of ``name`` to resume, or None for a fresh build (after dropping the old one if asked).

    Raises:
        IndexExists: ``name`` is built already, or its unfinished build had another source (``fingerprint``),
            model or nbits, and ``overwrite`` is False.
    """
    record = unfinished_build(conn, name, overwrite)
    if record is None:
        return None
    if record.config.get("build", {}).get("fingerprint") != fingerprint or record.model != model or record.nbits != nbits:
        raise IndexExists(
            f"an interrupted build of {name!r} used another collection or settings; pass overwrite=True (CLI: --overwrite) to start again"
        )
    return record


def train_codec(sample: torch.Tensor, config: IndexConfig, num_centroids: int, padding: torch.Tensor) -> tuple[ResidualCodec, RerankStore]:
    """The codec (k-means with ``num_centroids``, residual buckets, the encoder's ``padding``
    direction) and the rerank store, trained on ``sample`` as every build trains them.

    Shapes: sample [tokens, dim] float32; padding [dim].
    """
    with progress_bar(total=1, desc=f"k-means, {num_centroids} centroids", unit=" codec") as bar:  # minutes, without steps to show
        codec = train_residual_codec(sample, nbits=config.nbits, num_centroids=num_centroids, niters=config.kmeans_niters, seed=config.seed)
        codec = dataclasses.replace(codec, padding=padding.to(codec.centroids.device))
        bar.update(1)
    return codec, train_store(config.precision, sample, codec)


def create_build(
    conn: psycopg.Connection[Any],
    name: str,
    encoder: Encoder,
    config: IndexConfig,
    codec: ResidualCodec,
    rerank: RerankStore,
    build: dict[str, Any],
) -> int:
    """The new index's row, codec and language, committed before any document (so that an
    interrupted build can resume); ``build`` adds to the recorded settings (the source's fingerprint). Its id."""
    settings = {
        "precision": config.precision,
        "encoder": dataclasses.asdict(encoder.settings),
        "build": dataclasses.asdict(config) | build,
    }
    with conn.transaction():
        index_id = store.create_index(conn, name=name, model=encoder.name, config=settings, codec=codec, rerank=rerank)
        if config.language is not None:
            fulltext.set_language(conn, index_id, config.language)
    return index_id


class Indexer:
    """Builds an index of a collection with one checkpoint."""

    def __init__(self, checkpoint: str | Path | Encoder, config: IndexConfig | None = None, *, url: str | None = None) -> None:
        self.config = config or IndexConfig()
        self.url = url
        if isinstance(checkpoint, Encoder):
            self.encoder = checkpoint
        else:
            self.encoder = Encoder.from_pretrained(checkpoint, self.config.encoder_settings())
        self.stats = BuildStats()

    def _encode(self, documents: Sequence[CollectionDocument]) -> list[torch.Tensor]:
        started = time.perf_counter()
        vectors = self.encoder.encode_documents(
            [d.text for d in documents], batch_size=self.config.encode_batch_size, progress=False, warn_truncation=False
        )
        self.stats.encode_s += time.perf_counter() - started
        return vectors

    def _train(
        self, documents: Sequence[CollectionDocument], chunks: list[range]
    ) -> tuple[ResidualCodec, RerankStore, dict[int, list[torch.Tensor]]]:
        """Encode a sample of whole batches, train the codec, keep what fits of the encodings for writing."""
        rng = random.Random(self.config.seed)
        order = list(range(len(chunks)))
        rng.shuffle(order)
        wanted = sample_size(len(documents))
        picked: list[int] = []
        sampled = 0
        for chunk in order:
            if sampled >= wanted:
                break
            picked.append(chunk)
            sampled += len(chunks[chunk])
        cache: dict[int, list[torch.Tensor]] = {}
        sample: list[torch.Tensor] = []
        cached_bytes = 0
        for chunk in progress_bar(sorted(picked), desc="encoding the k-means sample", unit="batch"):
            vectors = self._encode([documents[i] for i in chunks[chunk]])
            sample.extend(vectors)
            size = sum(v.numel() * v.element_size() for v in vectors)
            if cached_bytes + size <= self.config.sample_keep_bytes:
                cache[chunk] = vectors
                cached_bytes += size
        tokens = torch.cat(sample)
        estimated_tokens = int(len(tokens) / sampled * len(documents))
        k = self.config.num_centroids or num_centroids_for(estimated_tokens)
        logger.info("k-means: %d centroids from %d sample tokens (%d documents)", k, len(tokens), len(sample))
        started = time.perf_counter()
        codec, rerank = train_codec(tokens, self.config, k, self.encoder.padding_direction())
        self.stats.train_s += time.perf_counter() - started
        return codec, rerank, cache

    def index(self, name: str, collection: Iterable[Any] | Path, overwrite: bool = False) -> Index:
        """Build index ``name``; resume an interrupted build of the same collection.

        Raises:
            IndexExists: the index is built already and ``overwrite`` is False.
            DocumentError, EncodingError, CollectionError: the collection cannot be indexed (nothing is written).
        """
        documents = read_collection(collection) if isinstance(collection, Path) else documents_from(collection)
        if not documents:
            raise DocumentError("the collection is empty")
        chunks = _chunks(len(documents), self.config.write_batch_size)
        self.stats = BuildStats(documents=len(documents))
        truncated = self.encoder.tokenizer.count_truncated([d.text for d in documents])
        if truncated:
            logger.warning(
                "%d of %d documents are longer than doc_maxlen=%d tokens and will be truncated",
                truncated,
                len(documents),
                self.encoder.settings.doc_maxlen,
            )
        fingerprint = _fingerprint(documents)
        url = self.url or db.database_url()
        with db.connect(url, autocommit=True) as conn:
            if self.config.language is not None:
                fulltext.check_language(conn, self.config.language)
            record = resumable_build(
                conn, name, fingerprint=fingerprint, model=self.encoder.name, nbits=self.config.nbits, overwrite=overwrite
            )
            cache: dict[int, list[torch.Tensor]] = {}
            if record is None:
                codec, rerank, cache = self._train(documents, chunks)
                build = {"documents": len(documents), "fingerprint": fingerprint}
                index_id = create_build(conn, name, self.encoder, self.config, codec, rerank, build)
                written: set[str] = set()
            else:
                index_id = record.id
                codec, rerank = store.load_codec(conn, record, self.encoder.device)
                written = store.existing_ids(conn, index_id)
                logger.info("resuming the build of %s: %d of %d documents already written", name, len(written), len(documents))
            codec = codec.to(self.encoder.device)
            with progress_bar(total=len(documents), desc=f"indexing {name}", unit="doc") as bar:
                for number, chunk in enumerate(chunks):
                    batch = [documents[i] for i in chunk]
                    if batch[0].external_id in written:
                        bar.update(len(batch))
                        continue
                    vectors = cache.pop(number, None) or self._encode(batch)
                    started = time.perf_counter()
                    with conn.transaction():
                        store.write_documents(conn, index_id, batch, vectors, codec, rerank)
                    self.stats.write_s += time.perf_counter() - started
                    self.stats.tokens += sum(len(v) for v in vectors)
                    bar.update(len(batch))
            store.finish_build(conn, index_id)
        return Index(name, url=url, encoder=self.encoder)
