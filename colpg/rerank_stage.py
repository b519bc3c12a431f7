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

Each store scores documents' rows by :meth:`RerankStore.maxsims`: the int8 store in C where
its rows are scored in float on a CPU (colpg.int8_kernel), else in PyTorch by blocks. A store
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

__all__ = ["EARLY_STEP", "EXACT_BATCH", "ROW_COLUMNS", "Reranker", "near_top"]

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


class Reranker:
    """Scores documents exactly from their rerank rows, through one searcher's row cache."""

    def __init__(self, cache: RowCache, device: torch.device) -> None:
        self.cache = cache
        self.device = device

    def rows(self, pg: psycopg.Connection[Any], view: IndexView, store: RerankStore, ids: Sequence[int]) -> list[tuple[int, torch.Tensor]]:
        """The stored rows (as the store's raw tensors) of ``ids`` that exist in this snapshot, in
        order: from the cache at the version ``view`` holds, else read (and cached at the version read).
        Called on colpg.threads' reads pool (:func:`colpg.threads.read`), so that the rows the cache
        holds are allocated on its few threads."""
        versions = dict(zip(ids, view.versions_of(list(ids)), strict=True))
        found: dict[int, torch.Tensor] = {}
        for doc_id, version in versions.items():
            raw = self.cache.get(doc_id, version) if version is not None else None
            if raw is not None:
                found[doc_id] = raw
        missing = [i for i in ids if i not in found]
        if missing:
            fetched = pg.execute(sql("search_rerank_rows"), {"ids": missing, **store.wanted()}, binary=True).fetchall()
            records = [dict(zip(ROW_COLUMNS, row, strict=True)) for row in fetched]
            for record, raw in zip(records, store.raws(records), strict=True):
                self.cache.put(record["document_id"], record["version"], raw)
                found[record["document_id"]] = raw
        return [(i, found[i]) for i in ids if i in found]

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
        starts = range(0, len(ids), step)
        following: Future[list[tuple[int, torch.Tensor]]] | None = read(self.rows, pg, view, store, ids[:step]) if ids else None
        try:
            for start in starts:
                assert following is not None
                stored = following.result()
                ahead = start + step  # read while this step is scored: the kernels and the server's reads overlap
                following = read(self.rows, pg, view, store, ids[ahead : ahead + step]) if ahead < len(ids) else None
                scores = coarse([raw for _, raw in stored])
                kept = near_top(kept + [(s, doc_id, raw) for s, (doc_id, raw) in zip(scores, stored, strict=True)], k, 2 * error)
                scored_count += len(stored)
                if early and first is not None:
                    position = dict(zip(ids[start:ahead], first[start:ahead], strict=True))
                    gap = max([gap] + [s - position[doc_id] for s, (doc_id, _) in zip(scores, stored, strict=True)])
                    if len(kept) >= k and ahead < len(ids) and first[ahead] + gap + slack * query.shape[0] < kept[k - 1][0]:
                        break
        finally:
            if following is not None:  # the connection is the search's again only once the read ahead is done
                wait([following])
        if self.cache.trim_due():
            release_freed_memory()  # the rows evicted, scattered among those still cached (colpg.rowcache)
        if error > 0:  # the store's own scores for those the coarse scores cannot tell apart from the top k
            exact = store.maxsims(query)[0]([raw for _, _, raw in kept])
            kept = sorted(((s, doc_id, raw) for s, (_, doc_id, raw) in zip(exact, kept, strict=True)), key=lambda b: -b[0])
        return [
            Ranked(doc_id, score, functools.partial(store.decode, raw.to(self.device))) for score, doc_id, raw in kept[:k]
        ], scored_count
