"""Stage 3 of a search: the probe's candidates scored whole from their resident codes and residuals.

The probe (colpg.probe) scores only the tokens under each query token's nearest centroids and
floors the rest, so its order of the candidates is loose: the rerank's walk in that order went
~600 documents deep on SciFact and ~1,000 on the assembled 100k, whose int8 rows come mostly
from PostgreSQL. Every token of a candidate is resident (colpg.view keeps where each document's
tokens lie), so this stage scores each candidate's MaxSim over all of its tokens as the probe
scores one (centroid score plus residual table rows, in colpg.kernel's loop on a CPU), plus its
padding gaps as the probe adds them. The rerank then walks the candidates in the order of these
scores, which lie much closer to its own: on bench/middle.py's replay it stopped within its first
step, at the same recall (bench/README.md, table 15).

The candidates are walked in first-stage order STEP at a time, stopped by the rerank's own rule
(colpg.rerank_stage.out_of_reach): once the next one's first-stage score, plus the largest
(whole - first stage) gap seen so far, plus ``slack`` per query token, is below the k-th whole
score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from colpg.codec import ResidualCodec
from colpg.kernel import MIN_TOKENS, KernelTable, fused_documents, kernel_for
from colpg.native import padded as padded_columns
from colpg.scoring import owners, token_maxima
from colpg.view import IndexView

__all__ = ["RERANK_SLACK", "RERANK_STEP", "STEP", "Walked", "WholeScorer", "pays", "walk"]

#: Candidates scored whole between checks whether the rest can still reach the top k. Growing steps
#: (half or all of those scored so far) were no faster: the kernel's work, not the calls, is the cost.
STEP = 64
#: The rerank's slack per query token in the order of the whole scores (colpg.rerank_stage).
RERANK_SLACK = 0.02
#: The documents the rerank scores between its checks in the order of the whole scores (its
#: EARLY_STEP, 64, in first-stage order). That order lies so close to its own that its first step
#: mostly ended the walk, and the next, read ahead from PostgreSQL meanwhile, was read for nothing
#: and waited for. With rows read from PostgreSQL, 16 kept recall@10 on SciFact and NFCorpus (300
#: queries), MS MARCO 5k, the assembled 10k (100) and 100k (50), and took the rerank's p50 from 16.1
#: to 7.8 ms on SciFact, 11.8 to 7.1 on the 10k and 19.9 to 10.5 on the 100k (bench/depth.py
#: --rerank-steps, bench/README.md, session 31); 32 was as fast and read more rows.
RERANK_STEP = 16


@dataclass(frozen=True)
class Walked:
    """The candidates the walk scored, best first by their whole scores, and the tokens it scored."""

    ids: list[int]
    scores: list[float]
    tokens: int


class WholeScorer:
    """Whole documents' scores for one query: the tables made once, then any documents of the view.

    Shapes: query [q, dim]; centroid_scores [q, num_centroids].
    """

    def __init__(self, query: torch.Tensor, centroid_scores: torch.Tensor, codec: ResidualCodec, view: IndexView, padded: int) -> None:
        self.codec, self.view, self.padded = codec, view, padded
        self.lib = kernel_for(MIN_TOKENS, query.device)
        if self.lib is not None:
            self.kernel_table = KernelTable.of(self.lib, codec.residual_table(query))
            # [num_centroids, columns]: centroid_scores' own storage where the query fills the kernel's lanes
            self.bases = padded_columns(centroid_scores.T.float(), self.kernel_table.columns)
        else:
            self.table = codec.query_table(query, centroid_scores)

    def __call__(self, slots: torch.Tensor) -> tuple[torch.Tensor, int]:
        """MaxSim of documents ``slots`` over all their tokens as the probe scores a token, plus
        ``padded`` times their padding gaps (colpg.probe.padded_tokens); -inf for a document with
        no token. And the tokens scored. Shapes: slots [d] int64 -> [d] float32."""
        scores = torch.full((len(slots),), -math.inf)
        tokens = 0
        for layout, mask in self.view.holders(slots):
            if self.lib is not None:
                best, count = fused_documents(self.lib, self.kernel_table, self.bases, layout, slots[mask])
            else:
                positions, codes, lengths = layout.document_positions(slots[mask])
                sims = self.codec.similarity(self.table, codes, layout.residuals_at(positions))
                best, count = token_maxima(sims, owners(lengths.tolist(), sims.device), len(lengths)), len(positions)
            scores[mask.cpu()] = best.sum(dim=1).cpu()
            tokens += count
        return scores + self.padded * self.view.gaps[slots.to(self.view.gaps.device)].cpu(), tokens


def pays(tokens: int, width: int, cache_bytes: int) -> bool:
    """Whether the stage runs by default on an index of ``tokens`` whose rerank rows take ``width``
    bytes a token, beside a row cache of ``cache_bytes``: where the rows outgrow the cache. Rows the
    cache holds are scored about as fast as whole documents are here (AVX-512 CPU, 2 cores: 0.16 µs a
    token each), so the stage's shorter rerank saves nothing and SciFact's search took 40.4 ms with
    it, 37.5 without; rows read from PostgreSQL cost far more, and a cache of 64 MB took SciFact from
    95.3 to 59.4 ms and NFCorpus from 141.3 to 81.1 (bench/README.md, table 15).

    >>> pays(1_000_000, 388, 1 << 30), pays(12_900_000, 388, 1 << 30)
    (False, True)
    """
    return tokens * width > cache_bytes


def walk(
    query: torch.Tensor,
    centroid_scores: torch.Tensor,
    codec: ResidualCodec,
    view: IndexView,
    ids: Sequence[int],
    first: Sequence[float],
    k: int,
    slack: float,
    padded: int,
) -> Walked:
    """``ids`` (first-stage order, scores ``first``) scored whole until the rest cannot reach the
    top ``k`` (module docstring; ``slack``: for the whole query); those scored, best first."""
    kept = [(doc_id, slot, score) for doc_id, slot, score in zip(ids, view.slots_of(list(ids)), first, strict=True) if slot is not None]
    if not kept:
        return Walked([], [], 0)
    whole = WholeScorer(query, centroid_scores, codec, view, padded)
    scored = torch.empty(0)
    gap = -math.inf
    tokens = 0
    done = 0
    while done < len(kept):
        step = kept[done : done + STEP]
        scores, count = whole(torch.tensor([slot for _, slot, _ in step]))
        scored = torch.cat([scored, scores])
        tokens += count
        gap = max(gap, float((scores - torch.tensor([score for _, _, score in step])).max()))
        done += len(step)
        if done < len(kept) and done >= k and kept[done][2] + gap + slack < float(scored.topk(k).values[-1]):
            break
    order = scored.argsort(descending=True, stable=True).tolist()
    return Walked([kept[i][0] for i in order], scored[order].tolist(), tokens)
