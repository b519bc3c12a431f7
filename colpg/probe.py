"""Search's first stage: score only the tokens of each query token's nearest centroids (WARP's idea).

For each query token, its ``ncells`` best centroids are probed, or those of them within a cell
margin of its best centroid's score (colpg.params.CELL_MARGIN); every token stored under a
probed centroid is scored against every query token at once as ``centroid score +
residual · query`` by table lookups (:meth:`ResidualCodec.similarity`, never decompressing),
then reduced per document: for each query token, the best of the document's scored tokens,
floored at the query token's ``ncells``-th centroid score (less IMPUTED_DISCOUNT where the floor
is what it gets). The floor plays the part of WARP's imputation (a document with no token under
a query token's centroids is credited with that score) and also keeps the 2-bit residuals'
noise at low similarities out of the ranking; bench/probe.py measures it against WARP's rule. The work grows with the tokens under the
probed centroids, not with the collection: with ColBERT's centroid count (~16·sqrt(tokens))
a centroid holds ~sqrt(tokens)/16 of them.

Each document's score then gains its padding gap (colpg.codec.ResidualCodec.padding_gaps) once
for every query token that is [MASK] padding (:func:`padded_tokens`): 2 bits underrate the
padding's best tokens, often far from every centroid, on all the padding positions at once, and
that gap, stored per document, puts such documents back where they belong in the order the
rerank walks (bench/README.md, table 14).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from colpg.codec import ResidualCodec
from colpg.device import int8_products_pay_on
from colpg.kernel import fused_floored, kernel_for
from colpg.layout import ClusterLayout
from colpg.scoring import Int8Query, int8_steps

__all__ = [
    "CENTROID_BLOCK",
    "IMPUTED_DISCOUNT",
    "PADDING_COSINE",
    "Candidates",
    "CentroidScorer",
    "Probe",
    "best_by_document",
    "centroid_scores",
    "floored_sum",
    "padded_tokens",
    "probe",
]


#: Tokens scored per step: temporaries stay a few MB, below glibc's mmap threshold, so they
#: reuse heap memory instead of page-faulting fresh pages on every query.
CHUNK = 8192


#: Centroids converted to float32 and multiplied at once by :func:`centroid_scores`: 3 MB at 384
#: dimensions, which stay in the cache between the conversion and the product.
CENTROID_BLOCK = 2048


def centroid_scores(query: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Each query token's similarity with each centroid, in float32 from centroids of any float type.

    Computed as ``centroids @ query.T`` (the tall-by-thin product ran 2.3x faster than ``query @
    centroids.T`` on 2 CPU cores) CENTROID_BLOCK centroids at a time, and transposed. From float16
    centroids (:meth:`ResidualCodec.half`), half the bytes to read: on 2 AVX2 cores, the assembled
    100k's 32,768 x 384 took 10.0 ms against 13.9 for the float32 product at once, the 10k's 16,384
    5.5 against 6.7, scores within 2e-4 (bench/kernel.py, session 29).

    Shapes: query [q, dim]; centroids [k, dim] -> [q, k] float32 (a transposed view).

    >>> centroid_scores(torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]).half()).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    query = query.float()
    scores = torch.empty(centroids.shape[0], query.shape[0], device=query.device)
    for start in range(0, centroids.shape[0], CENTROID_BLOCK):
        block = centroids[start : start + CENTROID_BLOCK]
        torch.mm(block.float(), query.T, out=scores[start : start + len(block)])  # float32 blocks are not copied
    return scores.T


@dataclass(frozen=True)
class CentroidScorer:
    """:func:`centroid_scores` for one index's centroids, in int8 products where they pay.

    Where ``torch._int_mm`` beats float products (colpg.device.int8_products_pay: AVX-512 VNNI,
    not AVX2 alone) each centroid and each query token is scaled to int8 by its largest component:
    on SciFact's and MS MARCO's queries the scores lay within 0.009 of the float ones, 99.3-99.5%
    of the cells probed were the same, and recall after the rerank was the same (bench/probe.py
    --centroid-int8, bench/README.md table 18); bench/kernel.py times both products. The int8 copy
    holds one byte per centroid dimension beside the centroids the codec keeps (float16 in a search).

    Shapes: centroids [k, dim]; quantized [k, dim] int8 and scales [k, 1] float32, or None.

    The query [0.6, 0.8] becomes [95, 127] at 0.8/127, so its score with [1, 0] is 95 · 0.8/127,
    not 0.6:

    >>> centroids = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    >>> scorer = CentroidScorer.of(centroids, integer=True)
    >>> scorer.quantized.tolist(), [[round(v, 3) for v in row] for row in scorer(torch.tensor([[0.6, 0.8]])).tolist()]
    ([[127, 0], [95, 127]], [[0.598, 0.998]])
    """

    centroids: torch.Tensor
    quantized: torch.Tensor | None = None
    scales: torch.Tensor | None = None

    @classmethod
    def of(cls, centroids: torch.Tensor, integer: bool | None = None) -> CentroidScorer:
        """``integer``: whether to score in int8 (None: where the device is a CPU whose int8 products pay)."""
        if integer is None:
            integer = int8_products_pay_on(centroids.device)
        if not integer:
            return cls(centroids)
        scales = int8_steps(centroids.float())
        return cls(centroids, (centroids.float() / scales).round_().to(torch.int8), scales)

    @property
    def nbytes(self) -> int:
        """Memory held besides the codec's float centroids."""
        return sum(t.numel() * t.element_size() for t in (self.quantized, self.scales) if t is not None)

    def __call__(self, query: torch.Tensor) -> torch.Tensor:
        """Shapes: query [q, dim] -> [q, k] (a transposed view)."""
        if self.quantized is None or self.scales is None:
            return centroid_scores(query, self.centroids)
        return Int8Query.of(query, parts=1).products(self.quantized).mul_(self.scales).T


@dataclass(frozen=True)
class Probe:
    """What each query token probes: ``cells`` [q, ncells] centroid codes, best first, of which
    ``kept`` [q, ncells] (None: all), those within the cell margin of its best; and ``floor`` [q],
    its ``ncells``-th centroid score: the least a document is credited with."""

    cells: torch.Tensor
    floor: torch.Tensor
    kept: torch.Tensor | None = None

    @classmethod
    def of(cls, centroid_scores: torch.Tensor, ncells: int, cell_margin: float = math.inf) -> Probe:
        """Each query token's ``ncells`` nearest centroids, of which it probes those whose score is within
        ``cell_margin`` of its nearest's (colpg.params). Shapes: centroid_scores [q, num_centroids].

        >>> p = Probe.of(torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]]), 2)
        >>> p.cells.tolist(), [round(v, 2) for v in p.floor.tolist()], p.probed().tolist()
        ([[0, 2], [1, 2]], [0.5, 0.3], [0, 1, 2])
        >>> Probe.of(torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]]), 2, cell_margin=0.3).probed().tolist()
        [0, 1]
        """
        top = centroid_scores.topk(min(ncells, centroid_scores.shape[1]), dim=1)
        kept = None if math.isinf(cell_margin) else top.values >= top.values[:, :1] - cell_margin
        return cls(top.indices, top.values[:, -1], kept)

    def probed(self) -> torch.Tensor:
        """The centroids some query token probes, ascending. Shapes: -> [c] int64."""
        return torch.unique(self.cells if self.kept is None else self.cells[self.kept])

    def mask(self, num_centroids: int) -> torch.Tensor:
        """Which centroids each query token probes. Shapes: -> [num_centroids, q] bool."""
        probed = torch.zeros(self.cells.shape[0], num_centroids, dtype=torch.bool, device=self.cells.device)
        return probed.scatter_(1, self.cells, True if self.kept is None else self.kept).T.contiguous()


@dataclass(frozen=True)
class Candidates:
    """Documents (view slots) by approximate score, best first. Shapes: slots [n] int64, scores [n]."""

    slots: torch.Tensor
    scores: torch.Tensor
    #: (query token, token) similarities computed: the stage's work.
    tokens_scored: int
    #: Per document, the query tokens credited with the floor rather than a scored token [n]
    #: (bench/probe.py, table 7: the more, the more the first stage overestimates the document).
    imputed: torch.Tensor


#: What a query token credited with the floor counts below it: the floor over-credits ~0.1 a
#: token on average (bench/probe.py, table 7), and documents resting on it belong lower in the
#: first-stage order; 0.02 lets the early-stopped rerank stop sooner at the same recall (table 8).
IMPUTED_DISCOUNT = 0.02


#: Query tokens of at least this cosine with the padding direction count as padding. The padding's
#: own tokens lie at 0.85-0.93 with it, query text mostly below 0.6 (bench/README.md, table 14:
#: 0.6 and 0.75 kept the same recall, 0.85 missed some padding and walked deeper).
PADDING_COSINE = 0.75


def padded_tokens(query: torch.Tensor, padding: torch.Tensor | None, cosine: float = PADDING_COSINE) -> int:
    """The query tokens of ``cosine`` or more with the ``padding`` direction: how many times each
    candidate's padding gap is added to its score (module docstring); 0 where the index has no
    direction.

    Shapes: query [q, dim]; padding [dim].

    >>> padded_tokens(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), torch.tensor([1.0, 0.0])), padded_tokens(torch.eye(2), None)
    (2, 0)
    """
    return 0 if padding is None else int((query @ padding.to(query) >= cosine).sum())


def floored_sum(best: torch.Tensor, floor: torch.Tensor, discount: float = 0.0) -> torch.Tensor:
    """Per document, the sum over query tokens of its best similarity, or where that is below
    ``floor``, the floor less ``discount``.

    Shapes: best [documents, q] (-inf where nothing was scored); floor [q] -> [documents].

    >>> best = torch.tensor([[0.9, 0.2], [0.4, float("-inf")]])
    >>> [round(v, 2) for v in floored_sum(best, torch.tensor([0.3, 0.3])).tolist()]
    [1.2, 0.7]
    >>> [round(v, 2) for v in floored_sum(best, torch.tensor([0.3, 0.3]), discount=0.1).tolist()]
    [1.1, 0.6]
    """
    floor = floor.to(best.dtype)
    return torch.where(best >= floor, best, floor - discount).sum(dim=1)


def probe(
    query: torch.Tensor,
    centroid_scores: torch.Tensor,
    codec: ResidualCodec,
    segments: Sequence[ClusterLayout],
    ncells: int,
    allowed: torch.Tensor,
    limit: int,
    gaps: torch.Tensor | None = None,
    padded: int = 0,
    cell_margin: float = math.inf,
) -> Candidates:
    """The ``limit`` best documents by probed-token scores, each plus ``padded`` times its padding
    gap (:func:`padded_tokens`), among the ``allowed`` slots.

    Every token under a centroid that some query token probes (of its ``ncells`` nearest, those
    within ``cell_margin`` of its nearest's score: colpg.params) is scored against every query
    token; a document's score for a query token is the best of those, or where that is below
    the query token's ``ncells``-th centroid score, that score less IMPUTED_DISCOUNT
    (bench/probe.py compares this with WARP's imputation).

    Shapes: query [q, dim]; centroid_scores [q, num_centroids]; allowed [slots] bool; gaps [slots].
    """
    plan = Probe.of(centroid_scores, ncells, cell_margin)
    cells = plan.probed()
    tokens = sum(int((layout.offsets[cells + 1] - layout.offsets[cells]).sum()) for layout in segments)
    lib = kernel_for(tokens, query.device)
    if lib is not None:
        table = codec.residual_table(query)
        slots, scores, imputed, tokens = fused_floored(
            lib, table, centroid_scores, cells, segments, len(allowed), plan.floor, IMPUTED_DISCOUNT
        )
    else:
        slots, best, tokens = best_by_document(query, codec, codec.query_table(query, centroid_scores), cells, segments)
        scores, imputed = floored_sum(best, plan.floor, IMPUTED_DISCOUNT), (best < plan.floor).sum(dim=1)
    if gaps is not None and padded:
        scores = scores + padded * gaps[slots.long()].to(scores)
    scores = scores.masked_fill(~allowed[slots.long()], float("-inf"))
    top = scores.topk(min(limit, len(slots)))
    chosen = top.indices[~torch.isneginf(top.values)]
    return Candidates(slots[chosen].long(), scores[chosen], tokens * query.shape[0], imputed[chosen])


def best_by_document(
    query: torch.Tensor, codec: ResidualCodec, table: torch.Tensor, cells: torch.Tensor, segments: Sequence[ClusterLayout]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For every document owning a token of ``cells``: its slot and, per query token, its best
    token's similarity; and the tokens scored. In PyTorch, on any device (colpg.kernel fuses it on the CPU).

    Shapes: query [q, dim]; table from :meth:`ResidualCodec.query_table`; cells [c] -> ([m] slots, [m, q], tokens).
    """
    found = [(layout, *layout.positions(cells)) for layout in segments]
    owner = torch.cat([layout.owners[positions] for layout, positions, _ in found])
    slots, local = torch.unique(owner, return_inverse=True)
    best = torch.full((len(slots), query.shape[0]), float("-inf"), device=query.device)
    start = 0
    for layout, positions, codes in found:
        for chunk in range(0, len(positions), CHUNK):
            part = slice(chunk, chunk + CHUNK)
            sims = codec.similarity(table, codes[part], layout.residuals_at(positions[part]))
            rows = local[start + chunk : start + chunk + sims.shape[0]]
            best.scatter_reduce_(0, rows[:, None].expand(-1, sims.shape[1]), sims, "amax")
        start += len(positions)
    return slots.long(), best, int(owner.shape[0])
