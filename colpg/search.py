"""Search an index: probed-token scores over the resident tokens, then exact MaxSim of the best few.

Every search runs in one read-only REPEATABLE READ transaction:

1. **sync** — one statement returns the index's row and the documents whose token rows
   changed since the searcher's resident view was last synced (``colpg.token_changes``);
   their rows are read and the view moves forward (colpg.view). A rebuilt index (new id or
   ``updated_at``) is loaded again. The view holds codes and residuals only.
2. **probe** — each query token's ``ncells`` nearest centroids, those within ``cell_margin`` of
   its nearest's score (colpg.params); the tokens under them are
   scored from their residuals by table lookups and reduced per document, with WARP's
   imputation where a document has no token under a query token's centroids (colpg.probe;
   large probes on a CPU in colpg.kernel's fused loop). ``ncells`` None follows the index's
   size (colpg.params.cells_for). The work follows the probed centroids, not the collection.
3. **filter** — a ``where`` clause runs in SQL: when it passes at most ``nrerank`` documents
   they are all scored exactly; otherwise the probe's best candidates are checked against it,
   in growing batches, until ``nrerank`` pass.
4. **residual** — where the index's rerank rows outgrow the row cache (or ``residual`` says so:
   colpg.params), the ``nrerank`` best (or, with a ``margin``, those near the k-th) are scored
   whole, every token from its resident code and residual, in first-stage order; with a
   ``slack`` it stops once the rest cannot reach the top k (colpg.residual_stage).
5. **rerank** — those, in the order of their whole or first-stage scores, are scored by exact
   MaxSim at the rerank store's precision (colpg.stores), their rows taken from the byte-capped
   row cache (colpg.rowcache) or read from PostgreSQL at the version this snapshot holds, until
   the rest cannot reach the top k, checked every 64 documents in first-stage order, 16 in the
   whole scores' (colpg.rerank_stage, colpg.residual_stage). Then the k results' rows are read.

No lock is held across SQL: views are immutable and swapped in whole; only a full load (the
first search, or after a rebuild) makes other searches of the index wait for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
import torch

from colpg import db, store
from colpg.codec import ResidualCodec
from colpg.device import freeze_long_lived, keep_freed_memory, release_freed_memory
from colpg.distribute import is_distributed
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, IndexNotFound, IndexNotReadyWarning
from colpg.explain import TokenMatch
from colpg.filters import Where, filtered_ids
from colpg.native import kernel_enabled, library
from colpg.params import SearchParams, cells_for, default_params
from colpg.probe import CentroidScorer, padded_tokens, probe
from colpg.rerank_stage import EXACT_BATCH, Reranker, Shortlist
from colpg.resident import changed_rows, load_view, newer, sync
from colpg.residual_stage import RERANK_SLACK, RERANK_STEP, pays, walk
from colpg.resources import query as sql
from colpg.results import Hit, Ranked
from colpg.rowcache import RowCache, cache_bytes_from_env
from colpg.store import IndexRecord
from colpg.stores import RerankStore
from colpg.view import IndexView

__all__ = ["Hit", "IndexSearcher", "Ranked", "SearchParams", "TokenMatch", "Where", "default_params"]

FILTER_WIDEN = 4  # candidates checked against a filter per document wanted, growing by this factor


@dataclass(frozen=True)
class _Loaded:
    """What a searcher holds of one index: its row, codec, rerank store, resident view and centroid scorer."""

    record: IndexRecord
    codec: ResidualCodec
    store: RerankStore
    view: IndexView
    scorer: CentroidScorer


def not_ready_message(name: str, documents: int) -> str:
    """Why the results of a search on an unfinished index are partial, and what finishes it."""
    return (
        f"index {name!r} is still being built ({documents} documents written so far): results cover only those;"
        f" an interrupted build resumes when `colpg index create {name}` runs again with the same collection"
    )


class IndexSearcher:
    """Answers queries on one index from its resident tokens, kept current from PostgreSQL."""

    def __init__(self, name: str, url: str, encoder: Encoder, *, cache_bytes: int | None = None) -> None:
        self.name = name
        self.encoder = encoder
        self.device = encoder.device
        self.engine = db.create_engine(url, pool_size=4, max_overflow=4)
        keep_freed_memory()
        self.cache = RowCache(cache_bytes_from_env() if cache_bytes is None else cache_bytes)
        self.reranker = Reranker(self.cache, self.device)
        self._loaded: _Loaded | None = None
        self._swap_lock = threading.Lock()  # held for pointer swaps only
        self._load_lock = threading.Lock()  # one full load at a time
        #: Seconds per stage of the last search (sync, probe, filter, whole, rerank, rows), for benchmarks.
        self.timings: dict[str, float] = {}
        #: Counts of the last search: ``tokens_scored``, the (query token, token) similarities its probe
        #: computed, ``reranked``, the documents scored exactly, and ``whole_tokens`` and ``ncells``, the
        #: tokens the residual stage scored and the cells probed per query token (absent when no probe ran).
        self.stats: dict[str, int] = {}
        self._local = threading.local()  # the running search's timings and counts, per thread
        self._distributed: bool | None = None  # on a Citus cluster (known at the first search)

    # -- the snapshot and the resident view --------------------------------------------------

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[tuple[sa.Connection, psycopg.Connection[Any]]]:
        """One read-only REPEATABLE READ transaction: SQLAlchemy for filters, psycopg for colpg's own statements."""
        with self.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with connection.begin():
                pg = connection.connection.driver_connection
                assert isinstance(pg, psycopg.Connection)  # the engine's driver is psycopg 3
                yield connection, pg

    def _current(self, pg: psycopg.Connection[Any], progress: bool | None = False) -> _Loaded:
        """The index as this snapshot sees it: the resident view synced, or loaded (again, after a rebuild)."""
        loaded = self._loaded
        if self._distributed is None:
            self._distributed = is_distributed(pg)
        row = sync(pg, self.name, loaded.view if loaded is not None else None, distributed=self._distributed)
        if row is None:
            raise IndexNotFound(f"no index named {self.name!r}; `colpg index list` shows the indexes")
        index_id, updated_at, snapshot, trimmed, changed = row
        if loaded is None or trimmed or (loaded.record.id, loaded.record.updated_at) != (index_id, updated_at):
            return self._load(pg, snapshot, loaded, progress)
        if not newer(snapshot, loaded.view.watermark):
            return loaded  # nothing changed, or another search synced to a newer snapshot already
        view = loaded.view.apply(changed, changed_rows(pg, changed, loaded.codec.residual_bytes), snapshot)
        current = dataclasses.replace(loaded, view=view)
        with self._swap_lock:
            if self._loaded is loaded:
                self._loaded = current
        return current

    def _load(self, pg: psycopg.Connection[Any], snapshot: str, stale: _Loaded | None, progress: bool | None = False) -> _Loaded:
        with self._load_lock:
            if self._loaded is not stale and self._loaded is not None:
                return self._loaded  # loaded by another search while this one waited
            record = store.get_index(pg, self.name)
            if record.dim != self.encoder.dim:
                raise ConfigurationError(
                    f"index {self.name!r} now holds {record.dim}-dim vectors (rebuilt with another model?);"
                    f" this searcher's model gives {self.encoder.dim}: open the index again"
                )
            codec, rerank = store.load_codec(pg, record, self.device, half=True)
            view = load_view(
                pg, record.id, int(codec.centroids.shape[0]), codec.residual_bytes, snapshot, self.device, name=self.name, progress=progress
            )
            if self.device.type == "cpu" and kernel_enabled():
                library()  # the CPU kernels built (or found built) now, not in a search: the rerank's run at any size
            loaded = _Loaded(record, codec, rerank, view, CentroidScorer.of(codec.centroids))
            self.cache.clear()
            self._loaded = loaded
            release_freed_memory()  # the rows read to build the view
            freeze_long_lived()  # the view's objects, the model's and the modules': not visited by every full collection
            return loaded

    def loaded(self) -> _Loaded:
        """The index as last synced (loading it now if no search has yet)."""
        with self._snapshot() as (_, pg):
            return self._current(pg)

    def warm(self, *, rows: bool = False, progress: bool | None = None) -> int:
        """Load the resident tokens now (else the first search does), and with ``rows`` fill the
        row cache with rerank rows until it is full; returns the documents held."""
        with self._snapshot() as (connection, pg):
            loaded = self._current(pg, progress)
            if rows:
                ids = filtered_ids(connection, loaded.record.id, None)
                for start in range(0, len(ids), EXACT_BATCH):
                    if self.cache.bytes >= self.cache.max_bytes:
                        break
                    self.reranker.rows(pg, loaded.view, loaded.store, ids[start : start + EXACT_BATCH])
                release_freed_memory()  # the rows read, now held as tensors in the cache
        return loaded.view.documents

    @property
    def resident_bytes(self) -> int:
        """Memory held for the index besides the row cache: resident tokens and centroids."""
        loaded = self._loaded
        if loaded is None:
            return 0
        return loaded.view.nbytes + loaded.codec.centroids.numel() * loaded.codec.centroids.element_size() + loaded.scorer.nbytes

    # -- stages ------------------------------------------------------------------------------

    def _candidates(
        self,
        connection: sa.Connection,
        loaded: _Loaded,
        query: torch.Tensor,
        k: int,
        params: SearchParams,
        where: Where,
        allowed: torch.Tensor | None,
    ) -> Shortlist:
        """Documents to rerank with their scores, best first: of the best by probed-token scores (that pass
        ``where``), those within ``margin`` per query token of the k-th best, at most ``nrerank``; then, where
        ``residual``, scored whole (colpg.residual_stage). With the rerank's slack and step after that stage."""
        view = loaded.view
        mask = view.alive if allowed is None else view.alive & allowed
        ncells = params.ncells or cells_for(view.tokens)
        self._local.stats["ncells"] = ncells
        started = time.perf_counter()
        scores = loaded.scorer(query)
        self._add_time("probe", started)
        padded = padded_tokens(query, loaded.codec.padding)
        limit = params.nrerank if where is None else FILTER_WIDEN * params.nrerank
        checked = 0
        passing: list[tuple[int, float]] = []
        while True:
            started = time.perf_counter()
            candidates = probe(query, scores, loaded.codec, view.segments, ncells, mask, limit, view.gaps, padded, params.cell_margin)
            ranked = list(zip(view.ids[candidates.slots.cpu()].tolist(), candidates.scores.tolist(), strict=True))
            self._add_time("probe", started)
            self._local.stats["tokens_scored"] += candidates.tokens_scored
            if where is None:
                passing = ranked
                break
            started = time.perf_counter()
            order = {doc_id: rank for rank, (doc_id, _) in enumerate(ranked)}
            kept = set(filtered_ids(connection, loaded.record.id, where, among=[doc_id for doc_id, _ in ranked[checked:]]))
            passing = sorted(passing + [item for item in ranked[checked:] if item[0] in kept], key=lambda item: order[item[0]])
            self._add_time("filter", started)
            if len(passing) >= params.nrerank or len(ranked) < limit:
                break
            checked, limit = len(ranked), limit * FILTER_WIDEN
        passing = passing[: params.nrerank]
        if len(passing) > k:
            cut = passing[k - 1][1] - params.margin * query.shape[0]
            passing = [(doc_id, score) for rank, (doc_id, score) in enumerate(passing) if rank < k or score >= cut]
        residual = params.residual
        if residual is None:
            residual = pays(view.tokens, loaded.store.width(loaded.codec.dim), self.cache.max_bytes)
        if not residual:
            return Shortlist([doc_id for doc_id, _ in passing], [score for _, score in passing], params.slack)
        started = time.perf_counter()
        ids, first = [doc_id for doc_id, _ in passing], [score for _, score in passing]
        walked = walk(query, scores, loaded.codec, view, ids, first, k, params.slack * query.shape[0], padded)
        self._add_time("whole", started)
        self._local.stats["whole_tokens"] = walked.tokens
        return Shortlist(walked.ids, walked.scores, RERANK_SLACK if math.isfinite(params.slack) else math.inf, RERANK_STEP)

    def _add_time(self, stage: str, started: float) -> None:
        timings: dict[str, float] = self._local.timings
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started

    def _with_rows(self, pg: psycopg.Connection[Any], ranked: list[Ranked], text: bool) -> list[Ranked]:
        rows = {r[0]: r for r in pg.execute(sql("search_results"), {"ids": [r.document_id for r in ranked], "want_text": text})}
        return [
            dataclasses.replace(
                r, external_id=rows[r.document_id][1], metadata=dict(rows[r.document_id][2] or {}), text=rows[r.document_id][3]
            )
            for r in ranked
            if r.document_id in rows
        ]

    # -- public ------------------------------------------------------------------------------

    def search_vectors(
        self,
        query: torch.Tensor,
        k: int,
        *,
        where: Where = None,
        exact: bool = False,
        params: SearchParams | None = None,
        text: bool = True,
    ) -> list[Ranked]:
        """The top ``k`` documents for query token vectors, best first. Shapes: query [q, dim]."""
        return self._search(query, k, where=where, exact=exact, params=params, text=text, among=None)

    def rank_candidates(self, query: torch.Tensor, ids: Sequence[int], k: int, params: SearchParams | None = None) -> list[Ranked]:
        """The top ``k`` among documents an application selected itself (:func:`colpg.orm.search_stmt`)."""
        return self._search(query, k, where=None, exact=False, params=params, text=True, among=list(ids))

    def _search(
        self,
        query: torch.Tensor,
        k: int,
        *,
        where: Where,
        exact: bool,
        params: SearchParams | None,
        text: bool,
        among: list[int] | None,
    ) -> list[Ranked]:
        dim = self.encoder.dim
        if query.ndim != 2 or query.shape[1] != dim or query.shape[0] == 0:
            raise ConfigurationError(f"query vectors must be [tokens, {dim}] with at least one token, got {list(query.shape)}")
        params = params or default_params(k)
        if k < 1:
            raise ConfigurationError(f"k must be positive, got {k}")
        query = query.to(self.device, torch.float32)
        self._local.timings, self._local.stats = {}, {"tokens_scored": 0, "reranked": 0}
        with self._snapshot() as (connection, pg):
            started = time.perf_counter()
            loaded = self._current(pg)
            self._add_time("sync", started)
            self._local.status = loaded.record.status
            self._local.warning = None if loaded.record.status == "ready" else not_ready_message(self.name, loaded.view.documents)
            if self._local.warning:
                warnings.warn(self._local.warning, IndexNotReadyWarning, stacklevel=4)
            ranked = self._rank(connection, pg, loaded, query, k, where, exact, params, among)
            started = time.perf_counter()
            ranked = self._with_rows(pg, ranked, text)
            self._add_time("rows", started)
        self.timings, self.stats = self._local.timings, self._local.stats
        return ranked

    def _rank(
        self,
        connection: sa.Connection,
        pg: psycopg.Connection[Any],
        loaded: _Loaded,
        query: torch.Tensor,
        k: int,
        where: Where,
        exact: bool,
        params: SearchParams,
        among: list[int] | None,
    ) -> list[Ranked]:
        record = loaded.record
        budget = max(k, params.nrerank)
        if exact:
            return self._timed_rerank(pg, loaded, query, Shortlist(filtered_ids(connection, record.id, where)), k)
        if among is not None and len(among) <= budget:
            return self._timed_rerank(pg, loaded, query, Shortlist(among), k)
        if where is not None and len(few := filtered_ids(connection, record.id, where, limit=budget + 1)) <= budget:
            return self._timed_rerank(pg, loaded, query, Shortlist(few), k)  # a selective filter: score every match exactly
        allowed = None
        if among is not None:
            allowed = torch.zeros_like(loaded.view.alive)
            allowed[[s for s in loaded.view.slots_of(among) if s is not None]] = True
        ranked = self._timed_rerank(pg, loaded, query, self._candidates(connection, loaded, query, k, params, where, allowed), k)
        if len(ranked) < k and among is None and len(every := filtered_ids(connection, record.id, where, limit=budget + 1)) <= budget:
            ranked = self._timed_rerank(pg, loaded, query, Shortlist(every), k)  # k exceeds the candidates of a small index
        return ranked

    def _timed_rerank(
        self, pg: psycopg.Connection[Any], loaded: _Loaded, query: torch.Tensor, shortlist: Shortlist, k: int
    ) -> list[Ranked]:
        started = time.perf_counter()
        ranked, scored = self.reranker.best(pg, loaded.view, loaded.store, query, shortlist, k)
        self._local.stats["reranked"] += scored
        self._add_time("rerank", started)
        return ranked

    @property
    def status(self) -> str:
        """The index's status as this thread's last search saw it: ``ready``, or ``building`` while
        its first build is unfinished (the results then cover only the documents written so far)."""
        return str(getattr(self._local, "status", "ready"))

    @property
    def warning(self) -> str | None:
        """Why this thread's last search may have missed documents (an unfinished index); None when it cannot have."""
        warning: str | None = getattr(self._local, "warning", None)
        return warning

    def stored_documents(self) -> tuple[list[str], list[str], list[torch.Tensor]]:
        """Every document's id, text and tokens at the rerank store's precision, for brute-force evaluation."""
        ids: list[str] = []
        texts: list[str] = []
        tokens: list[torch.Tensor] = []
        with self._snapshot() as (connection, pg):
            loaded = self._current(pg)
            document_ids = filtered_ids(connection, loaded.record.id, None)
            for start in range(0, len(document_ids), EXACT_BATCH):
                stored = self.reranker.rows(pg, loaded.view, loaded.store, document_ids[start : start + EXACT_BATCH])
                rows = {r[0]: r for r in pg.execute(sql("search_results"), {"ids": [i for i, _ in stored], "want_text": True})}
                for doc_id, raw in stored:
                    ids.append(rows[doc_id][1])
                    texts.append(rows[doc_id][3] or "")
                    tokens.append(loaded.store.decode(raw.to(self.device)))
        return ids, texts, tokens

    def close(self) -> None:
        self.engine.dispose()
