"""Search an index: candidates in SQL, then MaxSim in the worker (GPU when there is one).

1. The worker scores the query's tokens against the index's centroids (cached on the
   device) and takes each token's ``ncells`` best centroids; SQL returns the documents
   holding any of them (the GIN inverted list), filtered by the caller's ``where``, with
   the version of their token rows.
2. Centroid interaction ranks those candidates from their codes alone, pruned at
   ``centroid_score_threshold``, and keeps ``ndocs``.
3. MaxSim over their decompressed residuals (the worker's cache of codes and residuals,
   filled from PostgreSQL for documents it lacks) keeps ``nrerank``.
4. Exact MaxSim over those at the rerank store's precision gives the top k: the int8 store
   (the default) is cached with the codes, other stores are fetched in one round trip.
   Without a rerank store, the decompressed residuals are scored instead.

All SQL of one search runs in one REPEATABLE READ transaction, so the candidates, the
cache check and the fetched vectors come from the same snapshot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from tqdm.auto import tqdm

from colpg import db, store
from colpg.cache import TokenCache
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, EncodingError
from colpg.orm import Document
from colpg.resources import read_sql
from colpg.scoring import centroid_interaction, maxsim_chunked, maxsim_flat, owners
from colpg.store import IndexRecord, RerankStore

__all__ = ["Hit", "SearchParams", "TokenMatch", "Where", "default_params", "plaid_defaults"]

ARRAY_HEADER = 20  # array_send: ndim, flags, element type, length, lower bound
HALFVEC_HEADER = 2  # halfvec_send: int16 dim and int16 unused, i.e. two halves' room
EXACT_BATCH = 256
WARM_BATCH = 2048  # token rows per round trip when filling the cache

#: One ranked document: its score, its fetched row (id, external_id, metadata, ntokens, text),
#: and its tokens at the precision that scored it.
Ranked = tuple[float, sa.Row[Any], torch.Tensor]

#: A filter: a SQLAlchemy expression over colpg.orm.Document (and the caller's own tables),
#: or a SQL fragment over ``documents`` with its bound parameters.
Where = sa.ColumnElement[bool] | tuple[str, Mapping[str, Any]] | None


@dataclass(frozen=True)
class SearchParams:
    """The knobs of each stage: cells probed per query token, centroid pruning, documents
    scored on residuals (``ndocs``), documents reranked at the rerank store's precision."""

    ncells: int
    centroid_score_threshold: float
    ndocs: int
    nrerank: int

    def __post_init__(self) -> None:
        if min(self.ncells, self.ndocs, self.nrerank) < 1:
            raise ConfigurationError(f"ncells, ndocs and nrerank must be positive, got {self.ncells}, {self.ndocs}, {self.nrerank}")


def plaid_defaults(k: int) -> SearchParams:
    """PLAID's defaults by k; PLAID decompresses the best quarter of ``ndocs`` exactly.

    >>> plaid_defaults(10), plaid_defaults(1000).ndocs
    (SearchParams(ncells=1, centroid_score_threshold=0.5, ndocs=256, nrerank=64), 4096)
    """
    if k <= 10:
        ncells, threshold, ndocs = 1, 0.5, 256
    elif k <= 100:
        ncells, threshold, ndocs = 2, 0.45, 1024
    else:
        ncells, threshold, ndocs = 4, 0.4, max(k * 4, 4096)
    return SearchParams(ncells, threshold, ndocs, max(ndocs // 4, k))


def default_params(k: int) -> SearchParams:
    """colpg's defaults by k: PLAID's shape, sized by measurement to reach recall@k 0.99
    against exact MaxSim on the encoder's vectors (bench/README.md, "Quality").

    >>> default_params(10)
    SearchParams(ncells=8, centroid_score_threshold=0.4, ndocs=4096, nrerank=256)
    """
    if k <= 100:
        return SearchParams(8, 0.4, 4096, max(256, 2 * k))
    return SearchParams(8, 0.4, max(k * 16, 8192), 2 * k)


@dataclass(frozen=True)
class TokenMatch:
    """For one query token: the document token that gave its maximum, and the similarity."""

    query_token: str
    document_token: str
    document_position: int
    similarity: float


@dataclass(frozen=True)
class Hit:
    """One search result."""

    external_id: str
    score: float
    rank: int
    metadata: dict[str, Any]
    text: str | None
    explanation: list[TokenMatch] | None = None


def _codes_from_array_send(raw: bytes) -> np.ndarray:
    """int4[] in PostgreSQL's binary array format (``array_send``) to int64 values."""
    return np.frombuffer(raw, dtype=">i4", offset=ARRAY_HEADER)[1::2].astype(np.int64)


def _clause(where: Where) -> sa.ColumnElement[bool] | sa.TextClause | None:
    if where is None or isinstance(where, sa.ColumnElement):
        return where
    if isinstance(where, tuple) and len(where) == 2 and isinstance(where[0], str):
        return sa.text(where[0]).bindparams(**dict(where[1]))
    raise TypeError("where must be a SQLAlchemy expression or a (sql_fragment, parameters) pair")


class IndexSearcher:
    """Holds an index's codec and token cache on the device and a connection pool; answers queries."""

    def __init__(self, record: IndexRecord, url: str, encoder: Encoder) -> None:
        self.record = record
        self.encoder = encoder
        self.device = encoder.device
        self.engine = db.create_engine(url, pool_size=4, max_overflow=4)
        with db.connect(url) as conn:
            codec, rerank = store.load_codec(conn, record)
        self.codec = codec.to(self.device)
        self.rerank = rerank
        self.centroids = self.codec.centroids
        # The int8 store (the default) is cached beside codes and residuals: the final rerank then
        # reads no vectors from PostgreSQL. Other stores are fetched per query.
        self._cache_payload = rerank.int8 is not None
        self.cache = TokenCache(self.codec.residual_bytes, self.device, payload_dim=record.dim if self._cache_payload else 0)
        self._cache_lock = threading.RLock()
        # Only the columns the rerank reads are detoasted and sent.
        kind = rerank.kind
        self._columns_wanted = {
            "want_codes": kind in ("none", "residual4"),
            "want_residuals": kind == "none",
            "want_payload": kind in ("int8", "residual4"),
            "want_vectors": kind == "fp16",
        }
        #: Seconds spent per stage by the last search (sql, fetch, score), for benchmarks.
        self.timings: dict[str, float] = {}

    def _timed(self, stage: str, started: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """One read-only REPEATABLE READ transaction: every query of a search sees the same data."""
        with self.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with connection.begin():
                yield connection

    # -- the token cache ---------------------------------------------------------------

    def _cache_rows(self, rows: Sequence[sa.Row[Any]]) -> None:
        if not rows:
            return
        raw = b"".join(row.residuals for row in rows)
        payload = None
        if self._cache_payload:
            payload = torch.frombuffer(bytearray(b"".join(row.payload for row in rows)), dtype=torch.int8).view(-1, self.record.dim)
        self.cache.add(
            [row.document_id for row in rows],
            [row.version for row in rows],
            [row.ntokens for row in rows],
            torch.from_numpy(np.concatenate([_codes_from_array_send(row.codes) for row in rows])),
            torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, self.codec.residual_bytes),
            payload,
        )

    def warm(self, progress: bool | None = None) -> int:
        """Load every document's codes and residuals into the cache now (else on demand); returns the documents cached.

        The cache is rebuilt from scratch, which also drops deleted and superseded documents.
        """
        stmt = sa.text(read_sql("queries/index_tokens.sql")).bindparams(index_id=self.record.id, want_payload=self._cache_payload)
        with self._cache_lock, self._snapshot() as connection:
            self.cache.clear()
            result = connection.execution_options(yield_per=WARM_BATCH).execute(stmt)
            with tqdm(desc=f"caching {self.record.name}", unit=" docs", disable=None if progress is None else not progress) as bar:
                for rows in result.partitions():
                    self._cache_rows(rows)
                    bar.update(len(rows))
        return len(self.cache)

    def _load_missing(self, connection: sa.Connection, ids: list[int], versions: list[int]) -> None:
        started = time.perf_counter()
        if self.cache.dead_tokens > self.cache.size // 2:
            self.cache.clear()  # mostly superseded or deleted documents: start over
        missing = self.cache.missing(ids, versions)
        if missing:
            stmt = sa.text(read_sql("queries/search_tokens.sql")).bindparams(ids=missing, want_payload=self._cache_payload)
            self._cache_rows(connection.execute(stmt).all())
        self._timed("fetch", started)

    # -- SQL -------------------------------------------------------------------------------

    def _document_ids(self, connection: sa.Connection, where: Where, limit: int | None) -> list[int]:
        started = time.perf_counter()
        stmt = sa.select(Document.id).where(Document.index_id == self.record.id)
        clause = _clause(where)
        if clause is not None:
            stmt = stmt.where(clause)
        if limit is not None:
            stmt = stmt.limit(limit)
        ids = [row[0] for row in connection.execute(stmt)]
        self._timed("sql", started)
        return ids

    def _candidates(self, connection: sa.Connection, cells: list[int], where: Where) -> tuple[list[int], list[int]]:
        """Candidate document ids and their token rows' versions."""
        started = time.perf_counter()
        base = (
            sa.text(read_sql("queries/search_candidates.sql"))
            .bindparams(index_id=self.record.id, cells=cells)
            .columns(document_id=sa.BigInteger, version=sa.BigInteger)
            .subquery("candidates")
        )
        stmt = sa.select(base.c.document_id, base.c.version)
        clause = _clause(where)
        if clause is not None:
            stmt = stmt.join(Document, Document.id == base.c.document_id).where(clause)
        connection.execute(sa.text(read_sql("queries/search_prefer_inverted_list.sql")))
        rows = connection.execute(stmt).all()
        self._timed("sql", started)
        return [r[0] for r in rows], [r[1] for r in rows]

    def _fetch(self, connection: sa.Connection, ids: Sequence[int], *, text: bool, vectors: bool = True) -> list[sa.Row[Any]]:
        """Rows of ``ids`` in that order: with the rerank store's columns (``vectors``) and the text (``text``)."""
        started = time.perf_counter()
        wanted = self._columns_wanted if vectors else dict.fromkeys(self._columns_wanted, False)
        stmt = sa.text(read_sql("queries/search_fetch.sql")).bindparams(ids=list(ids), want_text=text, **wanted)
        rows = {row[0]: row for row in connection.execute(stmt)}
        self._timed("fetch", started)
        return [rows[i] for i in ids if i in rows]

    # -- scoring ---------------------------------------------------------------------------

    def _decode(self, rows: Sequence[sa.Row[Any]]) -> torch.Tensor:
        """Fetched documents' tokens at the best stored precision, decompressed in one batch.

        Shapes: returns [sum of the rows' ntokens, dim], the rows' tokens one after the other.
        """
        lengths = [row.ntokens for row in rows]
        rerank: RerankStore = self.rerank

        def stacked(column: str, dtype: torch.dtype) -> torch.Tensor:
            raw = b"".join(getattr(row, column) for row in rows)
            return torch.frombuffer(bytearray(raw), dtype=dtype).view(sum(lengths), -1).to(self.device)

        def codes() -> torch.Tensor:
            return torch.tensor([c for row in rows for c in row.codes], device=self.device)

        if rerank.int8 is not None:
            flat = rerank.int8.decompress(stacked("payload", torch.int8))
        elif rerank.residual4 is not None:
            flat = rerank.residual4.decompress(codes(), stacked("payload", torch.uint8))
        elif rerank.kind == "fp16":
            records = np.frombuffer(b"".join(row.vectors for row in rows), dtype=">f2").reshape(sum(lengths), -1)
            flat = torch.from_numpy(records[:, HALFVEC_HEADER:].astype(np.float32)).to(self.device)
        else:
            flat = self.codec.decompress(codes(), stacked("residuals", torch.uint8))
        return flat

    def stored_documents(self) -> tuple[list[str], list[str], list[torch.Tensor]]:
        """Every document's id, text and tokens at the best stored precision, for brute-force evaluation."""
        ids: list[str] = []
        texts: list[str] = []
        tokens: list[torch.Tensor] = []
        with self._snapshot() as connection:
            document_ids = self._document_ids(connection, None, None)
            for start in range(0, len(document_ids), EXACT_BATCH):
                rows = self._fetch(connection, document_ids[start : start + EXACT_BATCH], text=True)
                ids.extend(row.external_id for row in rows)
                texts.extend(row.text or "" for row in rows)
                tokens.extend(torch.split(self._decode(rows), [row.ntokens for row in rows]))
        return ids, texts, tokens

    def _rerank(self, connection: sa.Connection, query: torch.Tensor, ids: Sequence[int]) -> list[Ranked]:
        """Exact MaxSim over the stored tokens of ``ids``, best first."""
        scored: list[Ranked] = []
        for start in range(0, len(ids), EXACT_BATCH):
            rows = self._fetch(connection, ids[start : start + EXACT_BATCH], text=False)
            started = time.perf_counter()
            if not rows:
                continue
            flat = self._decode(rows)
            lengths = [row.ntokens for row in rows]
            scores = maxsim_flat(query[None], flat, owners(lengths, self.device), len(rows))[0].tolist()
            scored.extend(zip(scores, rows, torch.split(flat, lengths), strict=True))
            self._timed("score", started)
        scored.sort(key=lambda item: -item[0])
        return scored

    def _with_text(self, connection: sa.Connection, ranked: list[Ranked]) -> list[Ranked]:
        """The results' rows again, with their text: fetched for the top k only."""
        rows = self._fetch(connection, [item[1].id for item in ranked], text=True, vectors=False)
        return [(score, row, tokens) for (score, _, tokens), row in zip(ranked, rows, strict=True)]

    def _approximate(self, connection: sa.Connection, query: torch.Tensor, k: int, where: Where, params: SearchParams) -> list[Ranked]:
        started = time.perf_counter()
        centroid_scores = query @ self.centroids.T  # [q, centroids]
        cells = torch.unique(centroid_scores.topk(min(params.ncells, centroid_scores.shape[1]), dim=1).indices).tolist()
        self._timed("score", started)
        ids, versions = self._candidates(connection, cells, where)
        return self._rank(connection, query, centroid_scores, ids, versions, k, params)

    def rank_candidates(
        self, query: torch.Tensor, ids: Sequence[int], versions: Sequence[int], k: int, params: SearchParams | None = None
    ) -> list[Ranked]:
        """Stages 2-4 for candidates an application selected itself (:func:`colpg.orm.search_stmt`)."""
        params = params or default_params(k)
        query = query.to(self.device, torch.float32)
        with self._snapshot() as connection:
            ranked = self._rank(connection, query, query @ self.centroids.T, list(ids), list(versions), k, params)
            return self._with_text(connection, ranked)

    def _rank(
        self,
        connection: sa.Connection,
        query: torch.Tensor,
        centroid_scores: torch.Tensor,
        ids: list[int],
        versions: list[int],
        k: int,
        params: SearchParams,
    ) -> list[Ranked]:
        """Centroid interaction, residual MaxSim and the rerank, over candidate ids."""
        if not ids:
            return []
        with self._cache_lock:  # other threads may add to or clear the cache
            self._load_missing(connection, ids, versions)
            started = time.perf_counter()
            positions, lengths = self.cache.gather(ids)
            owner = torch.repeat_interleave(torch.arange(len(ids), device=self.device), lengths)
            codes = self.cache.codes[positions].long()
            # Stage 2: centroid interaction from codes alone.
            pruned = centroid_interaction(centroid_scores, codes, owner, len(ids), params.centroid_score_threshold)
            keep = pruned.topk(min(params.ndocs, len(ids))).indices
            # Stage 3: MaxSim over the kept documents' residuals, renumbered 0..len(keep)-1. A token
            # scores centroid + residual without re-normalising, looked up byte by byte.
            position = torch.full((len(ids),), -1, dtype=torch.long, device=self.device)
            position[keep] = torch.arange(len(keep), device=self.device)
            kept = position[owner] >= 0
            kept_positions, kept_codes = positions[kept], codes[kept]
            table = self.codec.query_table(query, centroid_scores)

            def similarity(part: slice) -> torch.Tensor:
                return self.codec.similarity(table, kept_codes[part], self.cache.residuals[kept_positions[part]])

            residual = maxsim_chunked(similarity, position[owner[kept]], len(keep), query.shape[0])
            best = [ids[i] for i in keep[residual.topk(min(max(params.nrerank, k), len(keep))).indices].tolist()]
            self._timed("score", started)
            if self.rerank.kind == "none" or self._cache_payload:
                return self._rerank_cached(connection, query, best, k)
        return self._rerank(connection, query, best)[:k]

    def _rerank_cached(self, connection: sa.Connection, query: torch.Tensor, ids: list[int], k: int) -> list[Ranked]:
        """The best ``k`` by MaxSim over cached tokens: the int8 store's when cached, else the
        decompressed (re-normalised) residuals; only the results' rows are fetched."""
        started = time.perf_counter()
        positions, lengths = self.cache.gather(ids)
        if self.cache.payload is not None and self.rerank.int8 is not None:
            flat = self.rerank.int8.decompress(self.cache.payload[positions])
        else:
            flat = self.codec.decompress(self.cache.codes[positions], self.cache.residuals[positions])
        scores = maxsim_flat(query[None], flat, owners(lengths.tolist(), self.device), len(ids))[0]
        tokens = torch.split(flat, lengths.tolist())
        top = scores.topk(min(k, len(ids)))
        self._timed("score", started)
        best = top.indices.tolist()
        rows = self._fetch(connection, [ids[i] for i in best], text=False, vectors=False)  # only the results' rows
        return list(zip(top.values.tolist(), rows, [tokens[i] for i in best], strict=True))

    def search_vectors(
        self, query: torch.Tensor, k: int, *, where: Where = None, exact: bool = False, params: SearchParams | None = None
    ) -> list[Ranked]:
        """The top ``k`` documents for query token vectors. Shapes: query [q, dim]."""
        if query.ndim != 2 or query.shape[1] != self.record.dim:
            raise ConfigurationError(f"query vectors must be [tokens, {self.record.dim}], got {list(query.shape)}")
        if k < 1:
            raise ConfigurationError(f"k must be positive, got {k}")
        params = params or default_params(k)
        self.timings = {}
        query = query.to(self.device, torch.float32)
        with self._snapshot() as connection:
            if exact:
                ranked = self._rerank(connection, query, self._document_ids(connection, where, None))[:k]
            elif where is not None and len(few := self._document_ids(connection, where, params.ndocs + 1)) <= params.ndocs:
                ranked = self._rerank(connection, query, few)[:k]  # a selective filter: score every match exactly
            else:
                ranked = self._approximate(connection, query, k, where, params)
                budget = max(k, params.ndocs)
                if len(ranked) < k and len(every := self._document_ids(connection, where, budget + 1)) <= budget:
                    ranked = self._rerank(connection, query, every)[:k]  # k exceeds the candidates of a small index
            return self._with_text(connection, ranked)

    def hits(self, query_text: str | None, query: torch.Tensor, ranked: list[Ranked], explain: bool) -> list[Hit]:
        out = []
        for rank, (score, row, tokens) in enumerate(ranked, start=1):
            explanation = self._explain(query_text, query, row, tokens) if explain else None
            out.append(Hit(row.external_id, float(score), rank, dict(row.metadata or {}), row.text, explanation))
        return out

    def _explain(self, query_text: str | None, query: torch.Tensor, row: sa.Row[Any], tokens: torch.Tensor) -> list[TokenMatch]:
        """Per query token, the best document token: re-tokenise the stored text (no extra storage)."""
        tokenizer = self.encoder.tokenizer
        if row.text is None:
            raise EncodingError(f"document {row.external_id!r} has no stored text to explain")
        sequence = tokenizer.document_ids([row.text], warn=False)[0]
        keep = tokenizer.documents([sequence]).keep[0]
        doc_tokens = [t for t, kept in zip(tokenizer.tokens(sequence), keep.tolist(), strict=True) if kept]
        query_tokens = tokenizer.tokens(tokenizer.queries([query_text]).input_ids[0].tolist()) if query_text else []
        similarity = query.to(self.device) @ tokens.T  # [q, t]
        best = similarity.max(dim=1)
        return [
            TokenMatch(
                query_tokens[q] if q < len(query_tokens) else f"#{q}",
                doc_tokens[p] if p < len(doc_tokens) else f"#{p}",
                int(p),
                float(s),
            )
            for q, (s, p) in enumerate(zip(best.values.tolist(), best.indices.tolist(), strict=True))
        ]

    def with_params(self, k: int, **overrides: Any) -> SearchParams:
        return dataclasses.replace(default_params(k), **{key: v for key, v in overrides.items() if v is not None})
