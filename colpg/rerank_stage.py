"""Stage 4 of a search: exact MaxSim of the candidates at the rerank store's precision.

The candidates' rerank rows come from the byte-capped row cache (colpg.rowcache) at the
version the searcher's view holds, or are read from PostgreSQL at the version the search's
snapshot holds, so no stale row is ever scored. Rows are read EXACT_BATCH documents at a time
and only the best k are kept between batches; the next batch is read on a thread
(colpg.threads) while this one is scored, so the server's reads overlap the scoring, which
releases the GIL in C: an exact search over every document holds no more than two batches'
rows. They come in binary results (bytea as bytes, where text results send hex) and are
converted a batch at a time (:meth:`RerankStore.raws`): bench/rows.py times each way.

With the candidates' first-stage scores and a finite ``slack`` (colpg.params), the rerank goes
EARLY_STEP documents at a time in first-stage order and stops once the next candidate cannot
reach the k-th exact score: its first-stage score, plus the largest gap (exact - first stage)
seen so far, plus ``slack`` per query token, is below it (bench/probe.py, table 5).

Each store scores documents' rows by :meth:`RerankStore.maxsims`: the int8 store in C on a
CPU whose int8 products do not pay in PyTorch (colpg.int8_kernel), else in PyTorch by blocks. A store
may score faster than exactly (``coarse``: on a CPU whose int8 products pay, the int8 store
multiplies by the query's first int8 part alone, half the work): then the best k by those
scores and every document within twice the scorer's error of them are scored again with the
store's own scorer, so the results are the store's own (bench/probe.py, table 6).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import psycopg
import torch

from colpg.device import release_freed_memory
from colpg.resources import query as sql
from colpg.results import Ranked
from colpg.rowcache import RowCache
from colpg.stores import RerankStore
from colpg.threads import read
from colpg.view import IndexView

__all__ = ["EARLY_STEP", "EXACT_BATCH", "ROW_COLUMNS", "Reranker", "Step", "near_top"]

EXACT_BATCH = 256  # documents read at once (row cache or PostgreSQL) when many are scored
EARLY_STEP = 64  # documents reranked between checks whether the rest can still reach the top k
#: The columns of ``search_rerank_rows``, in order.
ROW_COLUMNS = ("document_id", "version", "ntokens", "codes", "residuals", "payload", "vectors")


def near_top(scored: list[tuple[float, int, torch.Tensor]], k: int, margin: float) -> list[tuple[float, int, torch.Tensor]]:
    """The best ``k`` of ``scored`` (score first), best first, and after them any within ``margin`` of the k-th.

    >>> [s for s, _, _ in near_top([(1.0, 1, None), (3.0, 2, None), (2.5, 3, None), (0.0, 4, None)], 1, 0.6)]
    [3.0, 2.5]
    """
    ordered = sorted(scored, key=lambda b: -b[0])
    if len(ordered) <= k:
        return ordered
    cut = ordered[k - 1][0] - margin
    return [b for i, b in enumerate(ordered) if i < k or b[0] >= cut]


@dataclass(frozen=True)
class Step:
    """A step's rows being gathered (:meth:`Reranker.begin`): those found in the cache and the read of the rest."""

    ids: Sequence[int]
    found: dict[int, torch.Tensor]
    reading: Future[dict[int, torch.Tensor]] | None

    def rows(self) -> list[tuple[int, torch.Tensor]]:
        """``(id, raw row)`` of each of ``ids`` that exists, in order, once the read is done."""
        found = self.found | (self.reading.result() if self.reading is not None else {})
        return [(i, found[i]) for i in self.ids if i in found]

    def settle(self) -> None:
        """Wait for the read (whatever its outcome): the connection is the caller's again after it."""
        if self.reading is not None:
            wait([self.reading])


class Reranker:
    """Scores documents exactly from their rerank rows, through one searcher's row cache."""

    def __init__(self, cache: RowCache, device: torch.device) -> None:
        self.cache = cache
        self.device = device

    def rows(self, pg: psycopg.Connection[Any], view: IndexView, store: RerankStore, ids: Sequence[int]) -> list[tuple[int, torch.Tensor]]:
        """The stored rows (as the store's raw tensors) of ``ids`` that exist in this snapshot, in
        order: from the cache at the version ``view`` holds, else read (and cached at the version read)."""
        return self.begin(pg, view.versions_of(list(ids)), store, ids).rows()

    def begin(self, pg: psycopg.Connection[Any], versions: Sequence[int | None], store: RerankStore, ids: Sequence[int]) -> Step:
        """:meth:`rows`, begun: those of ``ids`` the cache holds now at the view's ``versions`` of
        them, and a read of the rest started on colpg.threads' reads pool, so the rows the cache
        holds are allocated on its few threads."""
        found = self.cache.get_many(ids, versions)
        missing = [i for i in ids if i not in found]
        return Step(ids, found, read(self._fetch, pg, store, missing) if missing else None)

    def _fetch(self, pg: psycopg.Connection[Any], store: RerankStore, ids: list[int]) -> dict[int, torch.Tensor]:
        """The rows of ``ids`` read from PostgreSQL (and cached at the version read)."""
        with pg.execute(sql("search_rerank_rows"), {"ids": ids, **store.wanted()}, binary=True) as cursor:
            fetched = cursor.fetchall()
        records = [dict(zip(ROW_COLUMNS, row, strict=True)) for row in fetched]
        found = {}
        for record, raw in zip(records, store.raws(records), strict=True):
            self.cache.put(record["document_id"], record["version"], raw)
            found[record["document_id"]] = raw
        return found

    def best(
        self,
        pg: psycopg.Connection[Any],
        view: IndexView,
        store: RerankStore,
        query: torch.Tensor,
        ids: Sequence[int],
        k: int,
        first: Sequence[float] | None = None,
        slack: float = math.inf,
    ) -> tuple[list[Ranked], int]:
        """The best ``k`` of ``ids`` by exact MaxSim, and how many documents were scored for them.

        ``first``: the first-stage scores of ``ids`` (best first); with a finite ``slack`` the
        rerank may stop before the end (module docstring).
        """
        early = first is not None and not math.isinf(slack)
        step = EARLY_STEP if early else EXACT_BATCH
        coarse, error = store.maxsims(query, coarse=True)
        kept: list[tuple[float, int, torch.Tensor]] = []  # by coarse score: the best k and those within 2 x error of them
        gap = -math.inf
        scored_count = 0
        versions = view.versions_of(list(ids))  # once: the view is the search's throughout
        first_of = dict(zip(ids, first, strict=True)) if early and first is not None else {}
        following = self.begin(pg, versions[:step], store, ids[:step])
        try:
            for start in range(0, len(ids), step):
                stored = following.rows()
                ahead = start + step  # read while this step is scored: the kernels and the server's reads overlap
                following = self.begin(pg, versions[ahead : ahead + step], store, ids[ahead : ahead + step])
                scores = coarse([raw for _, raw in stored])
                kept = near_top(kept + [(s, doc_id, raw) for s, (doc_id, raw) in zip(scores, stored, strict=True)], k, 2 * error)
                scored_count += len(stored)
                if early and first is not None:
                    gap = max([gap] + [s - first_of[doc_id] for s, (doc_id, _) in zip(scores, stored, strict=True)])
                    if len(kept) >= k and ahead < len(ids) and first[ahead] + gap + slack * query.shape[0] < kept[k - 1][0]:
                        break
        finally:
            following.settle()
        if self.cache.trim_due():
            release_freed_memory()  # the rows evicted, scattered among those still cached (colpg.rowcache)
        if error > 0:  # the store's own scores for those the coarse scores cannot tell apart from the top k
            exact = store.maxsims(query)[0]([raw for _, _, raw in kept])
            kept = sorted(((s, doc_id, raw) for s, (_, doc_id, raw) in zip(exact, kept, strict=True)), key=lambda b: -b[0])
        return [
            Ranked(doc_id, score, functools.partial(store.decode, raw.to(self.device))) for score, doc_id, raw in kept[:k]
        ], scored_count
