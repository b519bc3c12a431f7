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
EARLY_STEP documents at a time in first-stage order (or a ``step`` its caller gives: fewer in
the residual stage's order, colpg.residual_stage.RERANK_STEP) and stops once the next candidate cannot
reach the k-th exact score: its first-stage score, plus the largest gap (exact - first stage)
seen so far, plus ``slack`` per query token, is below it (bench/probe.py, table 5). The next
step is not read ahead where the steps scored so far already put it out of reach: the step
being scored then most likely ends the walk, and its read would only be waited for.

That walk scores the query's tokens in groups where they group well (colpg.scoring.grouped_query:
ColBERT's [MASK] padding, most of a short query, is alike), one row a group: fewer rows, so the
int8 kernel takes less time a document, and a MaxSim that is a lower bound of the whole query's.
The best RESCORED by it are then scored with the whole query in that order, and the same rule
stops them: the next one's bound plus the largest (whole - bound) gap seen plus RESCORE_SLACK
per query token is below the k-th whole score (bench/probe.py, table 13).

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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import psycopg
import torch

from colpg.device import release_freed_memory
from colpg.resources import query as sql
from colpg.results import Ranked
from colpg.rowcache import RowCache
from colpg.scoring import grouped_query
from colpg.stores import RerankStore
from colpg.threads import read
from colpg.view import IndexView

__all__ = [
    "EARLY_STEP",
    "EXACT_BATCH",
    "GROUPED_COSINE",
    "GROUPED_SHARE",
    "RESCORED",
    "RESCORE_SLACK",
    "ROW_COLUMNS",
    "Reranker",
    "Shortlist",
    "Step",
    "near_top",
    "out_of_reach",
]

EXACT_BATCH = 256  # documents read at once (row cache or PostgreSQL) when many are scored
EARLY_STEP = 64  # documents reranked between checks whether the rest can still reach the top k
#: Query tokens of this cosine with a group's first token join its group (colpg.scoring.grouped_query);
#: bench/probe.py, table 13: 9-19 rows for 32 query tokens at the same recall.
GROUPED_COSINE = 0.85
#: The grouped rows go first where they are at most this share of the query's tokens. Chosen, not
#: tuned: at three quarters the int8 kernel saves about a fifth of its time a document (table 13's
#: timing), which pays for rescoring 64 documents with the whole query once the walk passes ~300.
GROUPED_SHARE = 0.75
#: The best documents by the grouped rows that are rescored with the whole query: four steps,
#: where table 13's rescoring stopped after one for every query.
RESCORED = 4 * EARLY_STEP
#: The rescoring's slack per query token (at most the search's): the grouped rows' bound is far
#: tighter than the first stage, and 0 or 0.01 kept recall where 0.04 rescored twice as many (table 13).
RESCORE_SLACK = 0.01
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


def out_of_reach(kept: list[tuple[float, int, torch.Tensor]], k: int, following: float, gap: float, slack: float) -> bool:
    """Table 5's rule: whether the candidates from one of earlier score ``following`` on cannot
    reach the k-th score of ``kept`` (best first): ``following``, plus the largest (score - earlier
    score) ``gap`` seen so far, plus ``slack``, is below it.

    >>> out_of_reach([(9.5, 1, None), (8.0, 2, None)], 2, 7.0, 0.5, 0.4), out_of_reach([(9.5, 1, None)], 2, 0.0, 0.0, 0.0)
    (True, False)
    """
    return len(kept) >= k and following + gap + slack < kept[k - 1][0]


@dataclass(frozen=True)
class Shortlist:
    """The documents a rerank takes, in order, and how it may stop early: ``first``, their earlier
    stage's scores, best first (None: every document is scored), ``slack`` per query token and the
    ``step`` between checks (None: EARLY_STEP), as the stage before it sets them (module docstring)."""

    ids: Sequence[int]
    first: Sequence[float] | None = None
    slack: float = math.inf
    step: int | None = None


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
        shortlist: Shortlist,
        k: int,
    ) -> tuple[list[Ranked], int]:
        """The best ``k`` of the shortlist by exact MaxSim, and how many documents were scored for them.

        With first-stage scores and a finite slack the rerank may stop before the end, and goes on
        the query's grouped rows first where they are few enough (module docstring).
        """
        ids, first, slack, step = shortlist.ids, shortlist.first, shortlist.slack, shortlist.step
        early = first is not None and not math.isinf(slack)
        rows = grouped_query(query, GROUPED_COSINE) if early else query
        if early and rows.shape[0] <= GROUPED_SHARE * query.shape[0]:
            bounds, _ = store.maxsims(rows)
            scanned, count = self._scan(pg, view, store, bounds, ids, k, first, slack * query.shape[0], step, keep=max(k, RESCORED))
            kept = self._rescored(store.maxsims(query)[0], scanned, k, min(slack, RESCORE_SLACK) * query.shape[0])
        else:
            coarse, error = store.maxsims(query, coarse=True)
            kept, count = self._scan(
                pg, view, store, coarse, ids, k, first if early else None, slack * query.shape[0], step, margin=2 * error
            )
            if error > 0:  # the store's own scores for those the coarse scores cannot tell apart from the top k
                exact = store.maxsims(query)[0]([raw for _, _, raw in kept])
                kept = sorted(((s, doc_id, raw) for s, (_, doc_id, raw) in zip(exact, kept, strict=True)), key=lambda b: -b[0])
        if self.cache.trim_due():
            release_freed_memory()  # the rows evicted, scattered among those still cached (colpg.rowcache)
        return [Ranked(doc_id, score, functools.partial(store.decode, raw.to(self.device))) for score, doc_id, raw in kept[:k]], count

    def _scan(
        self,
        pg: psycopg.Connection[Any],
        view: IndexView,
        store: RerankStore,
        score: Callable[[list[torch.Tensor]], list[float]],
        ids: Sequence[int],
        k: int,
        first: Sequence[float] | None,
        slack: float,
        step: int | None,
        *,
        keep: int | None = None,
        margin: float = 0.0,
    ) -> tuple[list[tuple[float, int, torch.Tensor]], int]:
        """``ids``' rows scored by ``score`` in order, read a step ahead, stopping early where
        ``first`` is given once the next cannot reach the k-th score (``slack``: for the whole
        query), checked every ``step`` documents (None: EARLY_STEP); the best ``keep`` (default ``k``) by those scores
        and any within ``margin`` of them (:func:`near_top`), best first, and how many documents
        were scored."""
        step = EXACT_BATCH if first is None else step or EARLY_STEP
        kept: list[tuple[float, int, torch.Tensor]] = []
        gap = -math.inf
        count = 0
        versions = view.versions_of(list(ids))  # once: the view is the search's throughout
        first_of = dict(zip(ids, first, strict=True)) if first is not None else {}
        following: Step | None = self.begin(pg, versions[:step], store, ids[:step])
        try:
            for start in range(0, len(ids), step):
                stored = (following or self.begin(pg, versions[start : start + step], store, ids[start : start + step])).rows()
                ahead = start + step
                # The next step is read while this one is scored (the kernels and the server's reads overlap),
                # unless the steps scored so far already put it out of reach: then this one most likely ends
                # the walk, and a read begun now would only be waited for (a step of rows from PostgreSQL).
                following = None
                if first is None or not (ahead < len(ids) and out_of_reach(kept, k, first[ahead], gap, slack)):
                    following = self.begin(pg, versions[ahead : ahead + step], store, ids[ahead : ahead + step])
                scores = score([raw for _, raw in stored])
                kept = near_top(kept + [(s, doc_id, raw) for s, (doc_id, raw) in zip(scores, stored, strict=True)], keep or k, margin)
                count += len(stored)
                if first is not None:
                    gap = max([gap] + [s - first_of[doc_id] for s, (doc_id, _) in zip(scores, stored, strict=True)])
                    if ahead < len(ids) and out_of_reach(kept, k, first[ahead], gap, slack):
                        break
        finally:
            if following is not None:
                following.settle()
        return kept, count

    @staticmethod
    def _rescored(
        exact: Callable[[list[torch.Tensor]], list[float]], scanned: list[tuple[float, int, torch.Tensor]], k: int, slack: float
    ) -> list[tuple[float, int, torch.Tensor]]:
        """The best ``k`` by ``exact`` of ``scanned`` (lower bounds, best first), scored in that
        order EARLY_STEP at a time until the next bound, plus the largest (exact - bound) gap seen so
        far, plus ``slack``, is below the k-th exact score. Best first."""
        done: list[tuple[float, int, torch.Tensor]] = []
        gap = -math.inf
        for start in range(0, len(scanned), EARLY_STEP):
            part = scanned[start : start + EARLY_STEP]
            scores = exact([raw for _, _, raw in part])
            done = sorted(done + [(s, doc_id, raw) for s, (_, doc_id, raw) in zip(scores, part, strict=True)], key=lambda b: -b[0])
            gap = max([gap] + [s - bound for s, (bound, _, _) in zip(scores, part, strict=True)])
            ahead = start + EARLY_STEP
            if ahead < len(scanned) and out_of_reach(done, k, scanned[ahead][0], gap, slack):
                break
        return done
