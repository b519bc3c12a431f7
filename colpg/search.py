"""Search an index: candidates in SQL, then MaxSim in the worker (GPU when there is one).

1. The worker scores the query's tokens against the index's centroids (cached on the
   device) and takes each token's ``ncells`` best centroids; SQL returns the documents
   holding any of them (the GIN inverted list), filtered by the caller's ``where``.
2. Centroid interaction ranks those candidates from their codes alone: pruned at
   ``centroid_score_threshold`` to keep ``ndocs``, then unpruned to keep ``ndocs / 4``.
3. One round trip fetches the survivors' tokens at the index's best stored precision
   (the rerank store, else the decompressed residuals); exact MaxSim gives the top k.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA

from colpg import db, store
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, EncodingError
from colpg.orm import Document
from colpg.resources import read_sql
from colpg.scoring import centroid_interaction, maxsim_flat, owners
from colpg.store import IndexRecord, RerankStore

__all__ = ["Hit", "SearchParams", "TokenMatch", "Where", "plaid_defaults"]

ARRAY_HEADER = 20  # array_send: ndim, flags, element type, length, lower bound
EXACT_BATCH = 256

#: A filter: a SQLAlchemy expression over colpg.orm.Document (and the caller's own tables),
#: or a SQL fragment over ``documents`` with its bound parameters.
Where = sa.ColumnElement[bool] | tuple[str, Mapping[str, Any]] | None


@dataclass(frozen=True)
class SearchParams:
    """PLAID's knobs: cells probed per query token, centroid pruning, candidate budget."""

    ncells: int
    centroid_score_threshold: float
    ndocs: int

    def __post_init__(self) -> None:
        if self.ncells < 1 or self.ndocs < 1:
            raise ConfigurationError(f"ncells and ndocs must be positive, got {self.ncells} and {self.ndocs}")


def plaid_defaults(k: int) -> SearchParams:
    """PLAID's defaults by k.

    >>> plaid_defaults(10), plaid_defaults(1000).ndocs
    (SearchParams(ncells=1, centroid_score_threshold=0.5, ndocs=256), 4096)
    """
    if k <= 10:
        return SearchParams(1, 0.5, 256)
    if k <= 100:
        return SearchParams(2, 0.45, 1024)
    return SearchParams(4, 0.4, max(k * 4, 4096))


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
    """Holds an index's codec on the device and a connection pool; answers queries."""

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

    # -- SQL -------------------------------------------------------------------------------

    def _document_ids(self, where: Where, limit: int | None) -> list[int]:
        started = time.perf_counter()
        stmt = sa.select(Document.id).where(Document.index_id == self.record.id)
        clause = _clause(where)
        if clause is not None:
            stmt = stmt.where(clause)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as connection:
            ids = [row[0] for row in connection.execute(stmt)]
        self._timed("sql", started)
        return ids

    def _candidates(self, cells: list[int], where: Where) -> tuple[list[int], list[torch.Tensor]]:
        started = time.perf_counter()
        base = (
            sa.text(read_sql("queries/search_candidates.sql"))
            .bindparams(index_id=self.record.id, cells=cells)
            .columns(document_id=sa.BigInteger, codes=ARRAY(sa.Integer))
            .subquery("candidates")
        )
        stmt = sa.select(base.c.document_id, sa.func.array_send(base.c.codes, type_=BYTEA))
        clause = _clause(where)
        if clause is not None:
            stmt = stmt.join(Document, Document.id == base.c.document_id).where(clause)
        with self.engine.connect() as connection:
            connection.execute(sa.text(read_sql("queries/search_prefer_inverted_list.sql")))
            rows = connection.execute(stmt).all()
        self._timed("sql", started)
        return [r[0] for r in rows], [torch.from_numpy(_codes_from_array_send(r[1])) for r in rows]

    def _fetch(self, ids: Sequence[int]) -> list[sa.Row[Any]]:
        started = time.perf_counter()
        stmt = sa.text(read_sql("queries/search_fetch.sql")).bindparams(ids=list(ids), **self._columns_wanted)
        with self.engine.connect() as connection:
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
            flat = torch.from_numpy(np.stack([v.to_numpy() for row in rows for v in row.vectors])).float().to(self.device)
        else:
            flat = self.codec.decompress(codes(), stacked("residuals", torch.uint8))
        return flat

    def stored_documents(self) -> tuple[list[str], list[str], list[torch.Tensor]]:
        """Every document's id, text and tokens at the best stored precision, for brute-force evaluation."""
        ids: list[str] = []
        texts: list[str] = []
        tokens: list[torch.Tensor] = []
        document_ids = self._document_ids(None, None)
        for start in range(0, len(document_ids), EXACT_BATCH):
            rows = self._fetch(document_ids[start : start + EXACT_BATCH])
            ids.extend(row.external_id for row in rows)
            texts.extend(row.text or "" for row in rows)
            tokens.extend(torch.split(self._decode(rows), [row.ntokens for row in rows]))
        return ids, texts, tokens

    def _rerank(self, query: torch.Tensor, ids: Sequence[int]) -> list[tuple[float, sa.Row[Any], torch.Tensor]]:
        """Exact MaxSim over the stored tokens of ``ids``, best first."""
        scored: list[tuple[float, sa.Row[Any], torch.Tensor]] = []
        for start in range(0, len(ids), EXACT_BATCH):
            rows = self._fetch(ids[start : start + EXACT_BATCH])
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

    def search_vectors(
        self, query: torch.Tensor, k: int, *, where: Where = None, exact: bool = False, params: SearchParams | None = None
    ) -> list[tuple[float, sa.Row[Any], torch.Tensor]]:
        """The top ``k`` documents for query token vectors. Shapes: query [q, dim]."""
        if query.ndim != 2 or query.shape[1] != self.record.dim:
            raise ConfigurationError(f"query vectors must be [tokens, {self.record.dim}], got {list(query.shape)}")
        if k < 1:
            raise ConfigurationError(f"k must be positive, got {k}")
        params = params or plaid_defaults(k)
        self.timings = {}
        query = query.to(self.device, torch.float32)
        if exact:
            return self._rerank(query, self._document_ids(where, None))[:k]
        if where is not None:
            few = self._document_ids(where, params.ndocs + 1)
            if len(few) <= params.ndocs:  # a selective filter: score every match exactly
                return self._rerank(query, few)[:k]
        started = time.perf_counter()
        centroid_scores = query @ self.centroids.T  # [q, k]
        cells = torch.unique(centroid_scores.topk(min(params.ncells, centroid_scores.shape[1]), dim=1).indices).tolist()
        self._timed("score", started)
        ids, codes = self._candidates(cells, where)
        if not ids:
            return []
        started = time.perf_counter()
        flat_codes = torch.cat(codes).to(self.device)
        owner = owners([len(c) for c in codes], self.device)
        pruned = centroid_interaction(centroid_scores, flat_codes, owner, len(ids), params.centroid_score_threshold)
        keep = pruned.topk(min(params.ndocs, len(ids))).indices
        # Unpruned interaction on the kept documents only: renumber them 0..len(keep)-1.
        position = torch.full((len(ids),), -1, dtype=torch.long, device=self.device)
        position[keep] = torch.arange(len(keep), device=self.device)
        kept_tokens = position[owner] >= 0
        full = centroid_interaction(centroid_scores, flat_codes[kept_tokens], position[owner[kept_tokens]], len(keep))
        survivors = keep[full.topk(min(max(params.ndocs // 4, k), len(keep))).indices]
        self._timed("score", started)
        return self._rerank(query, [ids[i] for i in survivors.tolist()])[:k]

    def hits(self, query_text: str | None, query: torch.Tensor, ranked: list[tuple[float, sa.Row[Any], torch.Tensor]], explain: bool) -> list[Hit]:
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
        return dataclasses.replace(plaid_defaults(k), **{key: v for key, v in overrides.items() if v is not None})
