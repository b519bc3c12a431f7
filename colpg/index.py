"""A built index: ``Index(name)`` adds, updates, deletes and searches documents; listing and dropping indexes.

After the build (colpg.indexer), documents are added, updated and deleted row by row with the
stored codec, each call in one transaction; nothing is re-clustered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from colpg import db, store
from colpg.collection import CollectionDocument, documents_from
from colpg.device import keep_freed_memory
from colpg.distribute import lock_index
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, DocumentError, DocumentNotFound
from colpg.filters import Where
from colpg.hybrid import Hybrid, hybrid_search
from colpg.params import default_params
from colpg.reranking import Reranked, rerank_ids
from colpg.resources import query
from colpg.results import hits
from colpg.search import Hit, IndexSearcher

__all__ = ["Index", "drop_index", "list_indexes"]

REPLACE_HINT = "replace them with an update (Index.update, `colpg index add --update`, HTTP PUT /indexes/NAME/documents)"
ADD_HINT = "add new documents instead (Index.add, `colpg index add`, HTTP POST /indexes/NAME/documents)"

logger = logging.getLogger(__name__)


class Index:
    """A built index: documents can be added, updated and deleted; each call commits whole or not at all."""

    def __init__(self, name: str, *, url: str | None = None, encoder: Encoder | None = None, cache_bytes: int | None = None) -> None:
        keep_freed_memory()  # before this process loads a model, whose threads would make heaps of their own
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
            lock_index(conn, self.record.id)  # the check and the insert cannot interleave with another writer's
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
            lock_index(conn, self.record.id)
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
        slack: float | None = None,
        residual: bool | None = None,
        cell_margin: float | None = None,
        hybrid: Hybrid | None = None,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query`` (fewer when the index or the filter holds fewer).

        ``where`` filters in SQL before ranking; ``exact`` scores every (matching) document;
        ``explain`` adds, per query token, the document token that matched it best. ``ncells``,
        ``nrerank``, ``margin``, ``slack``, ``residual`` and ``cell_margin`` (see :mod:`colpg.params`) default to
        :func:`colpg.params.default_params`.
        ``hybrid`` unions colpg's candidates with full-text and single-vector ones (:mod:`colpg.hybrid`).
        """
        if hybrid is not None:
            if exact:
                raise ConfigurationError("exact=True scores every document; hybrid ranks its sources' candidates: give one of them")
            vectors = self.encoder.encode_queries([query])[0]
            params = default_params(hybrid.colpg or 1).replace(
                ncells=ncells, nrerank=nrerank, margin=margin, slack=slack, residual=residual, cell_margin=cell_margin
            )
            ranked = hybrid_search(self.searcher, query, vectors, k, hybrid, where=where, params=params)
            return hits(self.encoder, query, vectors, ranked, explain)
        return self.search_batch(
            [query],
            k,
            where=where,
            explain=explain,
            exact=exact,
            ncells=ncells,
            nrerank=nrerank,
            margin=margin,
            slack=slack,
            residual=residual,
            cell_margin=cell_margin,
        )[0]

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
        slack: float | None = None,
        residual: bool | None = None,
        cell_margin: float | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for each query, with the queries encoded together."""
        searcher = self.searcher
        params = default_params(k).replace(
            ncells=ncells, nrerank=nrerank, margin=margin, slack=slack, residual=residual, cell_margin=cell_margin
        )
        encoded = self.encoder.encode_queries(list(queries))
        return [
            hits(self.encoder, text, vectors, searcher.search_vectors(vectors, k, where=where, exact=exact, params=params), explain)
            for text, vectors in zip(queries, encoded, strict=True)
        ]

    def rerank(self, query: str, external_ids: Iterable[str], k: int | None = None, *, explain: bool = False) -> Reranked:
        """The best ``k`` (all when None) of the documents ``external_ids``, by exact MaxSim over their
        stored tokens; ids the index does not hold or has no tokens for are reported (:class:`colpg.reranking.Reranked`)."""
        return rerank_ids(self, query, external_ids, k, explain=explain)

    def info(self) -> dict[str, Any]:
        """Counts, bytes per token (codes+residuals and rerank store apart), and table sizes."""
        with db.connect(self.url) as conn:
            row = conn.execute(query("index_stats"), {"index_id": self.record.id}).fetchone()
            centroids_row = conn.execute(query("index_centroids"), {"index_id": self.record.id}).fetchone()
            tables = conn.execute(query("table_sizes")).fetchall()
            inverted = conn.execute(query("inverted_list_size")).fetchone()
        assert row is not None and inverted is not None and centroids_row is not None
        documents, tokens, codes_bytes, residual_bytes, rerank_bytes, text_bytes = (int(v) for v in row)
        centroids = int(centroids_row[0])
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
        if not store.drop_index(conn, name):
            store.get_index(conn, name)  # raises IndexNotFound with the usual message


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
