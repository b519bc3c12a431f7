"""Build and change colpg indexes: ``Indexer(checkpoint, config).index(name, collection)`` and ``Index``.

A build trains the codec on a sample of the collection, then writes the documents in
batches that each commit whole. The codec is committed with the index row before any
document, so an interrupted build resumes at the first batch it had not committed and
ends with exactly the rows of an uninterrupted one (batches are fixed slices of the
collection, encoded the same way each time). After the build, documents are added,
updated and deleted row by row with the stored codec; nothing is re-clustered.
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

from colpg import db, store
from colpg.codec import (
    ResidualCodec,
    num_centroids_for,
    sample_size,
    train_residual_codec,
)
from colpg.collection import CollectionDocument, documents_from, read_collection
from colpg.constants import NBITS
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, DocumentError, DocumentNotFound, IndexExists
from colpg.filters import Where
from colpg.params import default_params
from colpg.progress import bar as progress_bar
from colpg.resources import query
from colpg.search import Hit, IndexSearcher
from colpg.store import IndexRecord
from colpg.stores import KINDS, RerankStore, train_store

__all__ = ["BuildStats", "Index", "IndexConfig", "Indexer", "drop_index", "list_indexes"]

#: How to replace or add documents, in each interface's words (errors reach Python, CLI and HTTP users alike).
REPLACE_HINT = "replace them with an update (Index.update, `colpg index add --update`, HTTP PUT /indexes/NAME/documents)"
ADD_HINT = "add new documents instead (Index.add, `colpg index add`, HTTP POST /indexes/NAME/documents)"

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
        with progress_bar(total=1, desc=f"k-means, {k} centroids", unit=" codec") as bar:  # minutes, without steps to show
            codec = train_residual_codec(
                tokens, nbits=self.config.nbits, num_centroids=k, niters=self.config.kmeans_niters, seed=self.config.seed
            )
            bar.update(1)
        rerank = train_store(self.config.precision, tokens, codec)
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
            record = self._prepare(conn, name, fingerprint, overwrite)
            cache: dict[int, list[torch.Tensor]] = {}
            if record is None:
                codec, rerank, cache = self._train(documents, chunks)
                config = {
                    "precision": self.config.precision,
                    "encoder": dataclasses.asdict(self.encoder.settings),
                    "build": dataclasses.asdict(self.config) | {"documents": len(documents), "fingerprint": fingerprint},
                }
                with conn.transaction():
                    index_id = store.create_index(conn, name=name, model=self.encoder.name, config=config, codec=codec, rerank=rerank)
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
            with conn.transaction():
                conn.execute(query("index_mark_ready"), {"index_id": index_id})
                store.trim_changes(conn, index_id)
        return Index(name, url=url, encoder=self.encoder)

    def _prepare(self, conn: psycopg.Connection[Any], name: str, fingerprint: str, overwrite: bool) -> IndexRecord | None:
        """The record of a build to resume, or None for a fresh build (after dropping the old one if asked)."""
        record = store.find_index(conn, name)
        if record is None:
            return None
        if overwrite:
            with conn.transaction():
                _drop(conn, name)
            return None
        if record.status == "ready":
            raise IndexExists(f"index {name!r} exists already; pass overwrite=True (or --overwrite) to rebuild it")
        build = record.config.get("build", {})
        if build.get("fingerprint") != fingerprint or record.model != self.encoder.name or record.nbits != self.config.nbits:
            raise IndexExists(
                f"an interrupted build of {name!r} used another collection or settings; pass overwrite=True (CLI: --overwrite) to start again"
            )
        return record


class Index:
    """A built index: documents can be added, updated and deleted; each call commits whole or not at all."""

    def __init__(self, name: str, *, url: str | None = None, encoder: Encoder | None = None, cache_bytes: int | None = None) -> None:
        self.name = name
        self.cache_bytes = cache_bytes
        self.url = url or db.database_url()
        with db.connect(self.url) as conn:
            self.record = store.get_index(conn, name)
        self._encoder = encoder
        self._searcher: IndexSearcher | None = None
        if encoder is not None:
            self._check_encoder(encoder)

    def _check_encoder(self, encoder: Encoder) -> None:
        if encoder.dim != self.record.dim:
            raise ConfigurationError(
                f"the model {encoder.name} gives {encoder.dim}-dim vectors; index {self.name!r} holds {self.record.dim}-dim vectors"
            )

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded from where it was built on first use."""
        if self._encoder is None:
            settings = self.record.config.get("encoder", {})
            self._encoder = Encoder.from_pretrained(self.record.model, settings)
            self._check_encoder(self._encoder)
        return self._encoder

    def _write(self, conn: psycopg.Connection[Any], documents: list[CollectionDocument]) -> None:
        codec, rerank = store.load_codec(conn, self.record, self.encoder.device)
        step = int(self.record.config.get("build", {}).get("write_batch_size", 256))
        for start in range(0, len(documents), step):
            batch = documents[start : start + step]
            vectors = self.encoder.encode_documents([d.text for d in batch], progress=False)
            store.write_documents(conn, self.record.id, batch, vectors, codec, rerank)
        store.trim_changes(conn, self.record.id)

    def add(self, collection: Iterable[Any]) -> int:
        """Add new documents; an id the index holds already is an error and nothing is written."""
        documents = documents_from(collection)
        with db.connect(self.url, autocommit=True) as conn, conn.transaction():
            present = store.existing_ids(conn, self.record.id, [d.external_id for d in documents])
            if present:
                raise DocumentError(f"index {self.name!r} already holds {_few(present)}; {REPLACE_HINT}")
            self._write(conn, documents)
        return len(documents)

    def update(self, collection: Iterable[Any]) -> int:
        """Replace documents (text, metadata and tokens); every id must be in the index."""
        documents = documents_from(collection)
        ids = [d.external_id for d in documents]
        with db.connect(self.url, autocommit=True) as conn, conn.transaction():
            missing = set(ids) - store.existing_ids(conn, self.record.id, ids)
            if missing:
                raise DocumentNotFound(f"index {self.name!r} does not hold {_few(missing)}; {ADD_HINT}")
            store.delete_documents(conn, self.record.id, ids)
            self._write(conn, documents)
        return len(documents)

    def texts(self, external_ids: Iterable[str]) -> dict[str, str]:
        """The stored text of each of ``external_ids`` the index holds (the others are absent)."""
        with db.connect(self.url) as conn:
            rows = conn.execute(query("documents_texts"), {"index_id": self.record.id, "external_ids": [str(i) for i in external_ids]})
            return {external_id: text or "" for external_id, text in rows.fetchall()}

    def ids(self, among: Iterable[str] | None = None) -> set[str]:
        """The external ids the index holds: all of them, or those ``among`` these."""
        with db.connect(self.url) as conn:
            return store.existing_ids(conn, self.record.id, None if among is None else [str(i) for i in among])

    def delete(self, external_ids: Iterable[str]) -> int:
        """Delete documents by id; an unknown id is an error and nothing is deleted."""
        ids = [str(i) for i in external_ids]
        with db.connect(self.url, autocommit=True) as conn, conn.transaction():
            deleted = store.delete_documents(conn, self.record.id, ids)
            missing = set(ids) - deleted
            if missing:
                raise DocumentNotFound(f"index {self.name!r} does not hold {_few(missing)}; nothing was deleted")
            store.trim_changes(conn, self.record.id)
        return len(deleted)

    @property
    def searcher(self) -> IndexSearcher:
        """The searcher: resident tokens on the device, a row cache and a connection pool, made on first use."""
        if self._searcher is None:
            self._searcher = IndexSearcher(self.name, self.url, self.encoder, cache_bytes=self.cache_bytes)
        return self._searcher

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Where = None,
        explain: bool = False,
        exact: bool = False,
        ncells: int | None = None,
        nrerank: int | None = None,
        margin: float | None = None,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query`` (fewer when the index or the filter holds fewer).

        ``where`` filters in SQL before ranking; ``exact`` scores every (matching) document;
        ``explain`` adds, per query token, the document token that matched it best. ``ncells``,
        ``nrerank`` and ``margin`` (see :mod:`colpg.params`) default to :func:`colpg.params.default_params`.
        """
        return self.search_batch([query], k, where=where, explain=explain, exact=exact, ncells=ncells, nrerank=nrerank, margin=margin)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        where: Where = None,
        explain: bool = False,
        exact: bool = False,
        ncells: int | None = None,
        nrerank: int | None = None,
        margin: float | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for each query, with the queries encoded together."""
        searcher = self.searcher
        params = default_params(k).replace(ncells=ncells, nrerank=nrerank, margin=margin)
        encoded = self.encoder.encode_queries(list(queries))
        return [
            searcher.hits(text, vectors, searcher.search_vectors(vectors, k, where=where, exact=exact, params=params), explain)
            for text, vectors in zip(queries, encoded, strict=True)
        ]

    def info(self) -> dict[str, Any]:
        """Counts, bytes per token (codes+residuals and rerank store apart), and table sizes."""
        with db.connect(self.url) as conn:
            row = conn.execute(query("index_stats"), {"index_id": self.record.id}).fetchone()
            tables = conn.execute(query("table_sizes")).fetchall()
            inverted = conn.execute(query("inverted_list_size")).fetchone()
        assert row is not None and inverted is not None
        documents, tokens, centroids, codes_bytes, residual_bytes, rerank_bytes, text_bytes = (int(v) for v in row)
        sizes = {t[0]: {"heap": t[1], "toast": t[2], "indexes": t[3], "total": t[4]} for t in tables}
        per_token = (lambda b: b / tokens) if tokens else (lambda b: 0.0)
        compressed = self.record.dim * self.record.nbits / 8 + 4  # a token's residual bytes and its int4 code
        return {
            "name": self.name,
            "model": self.record.model,
            "status": self.record.status,
            "dim": self.record.dim,
            "nbits": self.record.nbits,
            "precision": self.record.precision,
            "documents": documents,
            "tokens": tokens,
            "centroids": centroids,
            "compressed_bytes_per_token": compressed,
            "codes_residuals_column_bytes_per_token": per_token(codes_bytes + residual_bytes),
            "codes_residuals_table_bytes_per_token": per_token(sizes["document_tokens"]["total"]),
            "inverted_list_bytes_per_token": per_token(inverted[0]),
            "rerank_column_bytes_per_token": per_token(rerank_bytes),
            "rerank_table_bytes_per_token": per_token(sizes["rerank_vectors"]["total"]),
            "float32_vector_bytes_per_token": 4 * self.record.dim + 8,
            "text_bytes": text_bytes,
            "tables": sizes,
        }


def drop_index(name: str, *, url: str | None = None) -> None:
    """Remove an index and everything in it."""
    with db.connect(url or db.database_url(), autocommit=True) as conn, conn.transaction():
        if not _drop(conn, name):
            store.get_index(conn, name)  # raises IndexNotFound with the usual message


def _drop(conn: psycopg.Connection[Any], name: str) -> bool:
    """Drop index ``name`` (and its token-change log) in the caller's transaction; False if there was none."""
    row = conn.execute(query("index_drop"), {"name": name}).fetchone()
    if row is not None:
        conn.execute(query("index_forget_changes"), {"index_id": row[0]})
    return row is not None


def list_indexes(*, url: str | None = None) -> list[dict[str, Any]]:
    """Every index with its size in documents."""
    with db.connect(url or db.database_url()) as conn:
        cursor = conn.execute(query("index_list"))
        columns = [c.name for c in cursor.description or []]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _few(ids: Iterable[str], shown: int = 5) -> str:
    ordered = sorted(ids)
    listed = ", ".join(repr(i) for i in ordered[:shown])
    return listed + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")
