"""Search's knobs and their defaults: cells probed per query token, documents reranked.

``ncells``: each query token's nearest centroids whose tokens are scored (colpg.probe); None
(the default) lets the index's size decide (:func:`cells_for`);
``nrerank``: the most documents scored exactly, at the rerank store's precision, for the top k;
``margin``: of those, only the documents whose first-stage score is within ``margin`` per
query token of the k-th best are reranked, so a query whose best documents stand out reranks
few and a query of near-ties reranks up to ``nrerank`` (bench/probe.py, "rerank by margin");
``slack``: the rerank goes in first-stage order and stops once the next candidate's first-stage
score, plus the largest (exact - first stage) gap seen so far, plus ``slack`` per query token,
is below the k-th exact score (colpg.rerank_stage). Queries whose top k stands out stop after
a few hundred documents; near-ties go on to ``nrerank`` (bench/probe.py, table 5);
``cell_margin``: of its ``ncells`` nearest centroids, a query token probes only those whose
score is within ``cell_margin`` of its nearest's (the floor stays its ``ncells``-th score), so a
query token whose nearest centroids stand out probes few and one with many near-ties probes up to
``ncells`` (colpg.probe.Probe);
``residual``: whether the candidates are first scored whole from their resident residuals, that
walk stopped by ``slack``, and the rerank then walks their order (colpg.residual_stage); None
(the default) where the index's rerank rows outgrow the row cache, as they come from PostgreSQL
then (:func:`colpg.residual_stage.pays`).
A filter that matches at most ``nrerank`` documents has all of them scored exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from colpg.errors import ConfigurationError

__all__ = ["BALANCED", "CELL_MARGIN", "LARGE_INDEX_TOKENS", "SearchParams", "cells_for", "default_params"]


@dataclass(frozen=True)
class SearchParams:
    """Cells probed per query token; at most ``nrerank`` documents reranked at the rerank store's
    precision, those within ``margin`` per query token of the k-th best first-stage score, stopping
    early by ``slack`` (module docstring)."""

    ncells: int | None
    nrerank: int
    margin: float = math.inf
    slack: float = math.inf
    residual: bool | None = None
    cell_margin: float = math.inf

    def __post_init__(self) -> None:
        if self.residual is not None and not isinstance(self.residual, bool):
            raise ConfigurationError(f"residual must be True, False or None (the index's size decides), got {self.residual!r}")
        for name in ("ncells", "nrerank"):
            value = getattr(self, name)
            if value is None and name == "ncells":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        for name in ("margin", "slack", "cell_margin"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise ConfigurationError(f"{name} must be a number of 0 or more (inf: none), got {value!r}")

    def replace(
        self,
        ncells: int | None = None,
        nrerank: int | None = None,
        margin: float | None = None,
        slack: float | None = None,
        residual: bool | None = None,
        cell_margin: float | None = None,
    ) -> SearchParams:
        """These parameters with the given ones changed (None keeps the current value)."""
        return SearchParams(
            self.ncells if ncells is None else ncells,
            self.nrerank if nrerank is None else nrerank,
            self.margin if margin is None else margin,
            self.slack if slack is None else slack,
            self.residual if residual is None else residual,
            self.cell_margin if cell_margin is None else cell_margin,
        )


#: Faster than the defaults, at less recall: half the cells, a rerank of at most 512 documents,
#: those within 0.05 a query token of the k-th first-stage score. Recall@10 0.996 on SciFact,
#: 0.986 on NFCorpus, 0.993 on MS MARCO, 0.970 on the assembled 10k, at 62% / 36% / 74% / 46% of
#: the p50 of the defaults then (slack 0.04; bench/README.md, compare.py sessions 24 and 25, "balanced").
BALANCED = SearchParams(ncells=32, nrerank=512, margin=0.05)


#: Index tokens from which the defaults probe 96 cells per query token instead of 64. On the
#: assembled 100k (12.9M tokens) 96 gave the same recall as 64 at 18% less p50 (the rerank
#: reached the top 10 1,280 documents deep at the median instead of 2,048, and its rows come
#: from PostgreSQL, not the cache) while at 10k (1.3M tokens) the two broke even and on the
#: real collections (0.6-1.2M) 96 probed ~1.5x the tokens for the same depth (bench/README.md,
#: session 14). The switch lies between the measured sizes, at their geometric mean.
LARGE_INDEX_TOKENS = 4_000_000


#: By default a query token probes, of its ``ncells`` nearest centroids, those within this of its nearest's
#: score. The centroid scores of a query token fall at very different rates (on the assembled 100k the
#: gap from its nearest to its 96th is 0.15 at the median, and some fall far faster), and a token far
#: below a query token's nearest centroids seldom is its best match. bench/depth.py, the same searches
#: crossed with each margin (bench/README.md, session 30): on 300 SciFact, 300 NFCorpus, 43 MS MARCO, 100
#: assembled 10k and 50 assembled 100k queries, 0.3 kept recall@10 at 0.995 / 0.987 / 0.993 / 0.993 /
#: 0.992 against every cell's 0.996 / 0.987 / 0.993 / 0.992 / 0.992, at 83% / 100% / 97% / 91% / 81% of
#: their p50 (0.25: 0.995 / 0.987 / 0.993 / 0.992 / 0.990, the 100k 76%); 0.15 lost NFCorpus 0.007
#: and 0.1 lost it 0.032, their first stage handing the rerank a looser order.
CELL_MARGIN = 0.3


def cells_for(tokens: int) -> int:
    """The cells each query token probes by default in an index of ``tokens`` tokens.

    >>> cells_for(1_300_000), cells_for(12_900_000)
    (64, 96)
    """
    return 96 if tokens >= LARGE_INDEX_TOKENS else 64


def default_params(k: int) -> SearchParams:
    """colpg's defaults for ``k`` results, measured to reach recall@k 0.99 against exact MaxSim
    on the encoder's own vectors (bench/probe.py table 5, bench/README.md): 64 centroids per query
    token (96 in indexes of LARGE_INDEX_TOKENS or more: :func:`cells_for`) and an exact rerank of
    up to the best 2,048 (or 8k), stopped early with a slack of 0.02 per query token. That slack
    was 0.05, then 0.04 once the first stage discounted imputed query tokens (table 8), and 0.02
    once it added the padding gaps: on 300 SciFact, 300 NFCorpus, 43 MS MARCO and 100 assembled
    10k queries, 0.02 kept recall@10 at 0.996 / 0.987 / 0.993 / 0.992 against 0.04's 0.996 / 0.989
    / 0.993 / 0.995, reranking 38-52% of the documents (bench/depth.py, bench/README.md table 17). The depth covers
    the codec a build happens to draw (a fixed 1,024 gave 0.985 to 0.990 on SciFact across
    draws; 2,048 gives 0.996), and the early stop keeps it cheap where
    the top k stands out (MS MARCO: the recall of a full rerank from a quarter of it). The rerank
    is most of the cost; :data:`BALANCED` trades recall for speed.

    Of its cells, each query token probes those within CELL_MARGIN of its nearest centroid's score.

    The probe's work grows with the tokens under the probed centroids: an index built with
    ColBERT's centroid count (~16·sqrt(tokens), rounded down to a power of two) holds
    sqrt(tokens)/16 to twice that per centroid, so the probe grows with about the square root of
    the collection. The rerank's depth is capped by ``nrerank``; its rows come from PostgreSQL
    once they outgrow the row cache.

    >>> default_params(10)
    SearchParams(ncells=None, nrerank=2048, margin=inf, slack=0.02, residual=None, cell_margin=0.3)
    """
    if k < 1:
        raise ConfigurationError(f"k must be positive, got {k}")
    return SearchParams(ncells=None, nrerank=max(2048, 8 * k), slack=0.02, cell_margin=CELL_MARGIN)
