"""Search's first stage: score only the tokens of each query token's nearest centroids (WARP's idea).

For each query token, its ``ncells`` best centroids are probed; every token stored under a
probed centroid is scored against every query token at once as ``centroid score +
residual · query`` by table lookups (:meth:`ResidualCodec.similarity`, never decompressing),
then reduced per document: for each query token, the best of the document's tokens under
that query token's own probed centroids. A document with none there gets the query token's
``ncells``-th centroid score instead, an estimate of what its tokens elsewhere reach (WARP's
imputation; bench/probe.py measures it against the alternatives). The work grows with the
tokens under the probed centroids, not with the collection: with ColBERT's centroid count
(~16·sqrt(tokens)) a centroid holds ~sqrt(tokens)/16 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from colpg.codec import ResidualCodec
from colpg.layout import ClusterLayout

__all__ = ["Candidates", "Probe", "probe", "reduce_probed"]


@dataclass(frozen=True)
class Probe:
    """What each query token probes: ``cells`` [q, ncells] centroid codes, best first, and
    ``missing`` [q], the similarity imputed where a document has no token in them."""

    cells: torch.Tensor
    missing: torch.Tensor

    @classmethod
    def of(cls, centroid_scores: torch.Tensor, ncells: int) -> Probe:
        """Shapes: centroid_scores [q, num_centroids].

        >>> p = Probe.of(torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]]), 2)
        >>> p.cells.tolist(), [round(v, 2) for v in p.missing.tolist()]
        ([[0, 2], [1, 2]], [0.5, 0.3])
        """
        top = centroid_scores.topk(min(ncells, centroid_scores.shape[1]), dim=1)
        return cls(top.indices, top.values[:, -1])

    def mask(self, num_centroids: int) -> torch.Tensor:
        """Which centroids each query token probes. Shapes: -> [num_centroids, q] bool."""
        probed = torch.zeros(self.cells.shape[0], num_centroids, dtype=torch.bool, device=self.cells.device)
        return probed.scatter_(1, self.cells, True).T.contiguous()


@dataclass(frozen=True)
class Candidates:
    """Documents (view slots) by approximate score, best first. Shapes: slots [n] int64, scores [n]."""

    slots: torch.Tensor
    scores: torch.Tensor
    #: (query token, token) similarities computed: the stage's work.
    tokens_scored: int


def reduce_probed(sims: torch.Tensor, owner: torch.Tensor, num_documents: int, probed: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Per document, the sum over query tokens of the best similarity among its tokens that
    query token probed, or ``missing`` where there is none.

    Shapes: sims [t, q]; owner [t] (document 0..num_documents-1); probed [t, q] bool; missing [q] -> [num_documents].

    >>> sims = torch.tensor([[0.9, 0.2], [0.4, 0.7], [0.6, 0.1]])
    >>> probed = torch.tensor([[True, False], [True, True], [True, False]])
    >>> [round(v, 2) for v in reduce_probed(sims, torch.tensor([0, 0, 1]), 2, probed, torch.tensor([0.3, 0.3])).tolist()]
    [1.6, 0.9]
    """
    best = torch.full((num_documents, sims.shape[1]), float("-inf"), device=sims.device, dtype=sims.dtype)
    best.scatter_reduce_(0, owner[:, None].expand(-1, sims.shape[1]), sims.masked_fill(~probed, float("-inf")), "amax")
    return torch.where(torch.isneginf(best), missing.to(best.dtype), best).sum(dim=1)


def probe(
    query: torch.Tensor,
    centroid_scores: torch.Tensor,
    codec: ResidualCodec,
    segments: Sequence[ClusterLayout],
    ncells: int,
    allowed: torch.Tensor,
    limit: int,
) -> Candidates:
    """The ``limit`` best documents by probed-token scores, among the ``allowed`` slots.

    Shapes: query [q, dim]; centroid_scores [q, num_centroids]; allowed [slots] bool.
    """
    plan = Probe.of(centroid_scores, ncells)
    cells = torch.unique(plan.cells)
    probed_by = plan.mask(centroid_scores.shape[1])
    table = codec.query_table(query, centroid_scores)
    owners, sims, probed = [], [], []
    for layout in segments:
        positions, codes = layout.positions(cells)
        owners.append(layout.owners[positions])
        sims.append(codec.similarity(table, codes, layout.residuals[positions]))
        probed.append(probed_by[codes])
    owner = torch.cat(owners)
    slots, local = torch.unique(owner, return_inverse=True)
    scores = reduce_probed(torch.cat(sims), local, len(slots), torch.cat(probed), plan.missing)
    scores = scores.masked_fill(~allowed[slots.long()], float("-inf"))
    top = scores.topk(min(limit, len(slots)))
    found = ~torch.isneginf(top.values)
    return Candidates(slots[top.indices[found]].long(), top.values[found], int(owner.shape[0]) * query.shape[0])
