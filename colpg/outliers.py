"""Tokens far from their centroid, kept at int8 beside their 2-bit residuals, so the first stage credits them fairly.

A token whose cosine with its own centroid is below :data:`OUTLIER_COSINE` has a residual
larger than 2 bits a dimension can carry: it decodes well below its exact similarity. Such
tokens are 1-2% of a collection, yet a query's [MASK] padding often matches one best, and the
documents that hold them sit deep in the first stage's order (bench/probe.py, table 11:
NFCorpus's median query reranked all 2,048 candidates). A build stores them once more, as
int8, in ``document_tokens.outliers``; the first stage scores those of its best documents from
these rows and re-orders them (:func:`colpg.probe.probe`), so the rerank's walk stops sooner at
the same recall (table 11: NFCorpus's median depth 2,048 -> 1,056).

Format: a document's outlier rows, in token order, ``dim`` int8 values each: the token
divided by its largest absolute value, times 127, rounded. Search re-normalises a row, so no
scale is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from colpg.layout import rows_at

__all__ = ["OUTLIER_COSINE", "Outliers", "encode", "quantize"]

#: Tokens below this cosine with their centroid are kept as int8 rows too: 1.1% (NFCorpus) to 2.1%
#: (MS MARCO) of the tokens, two thirds of NFCorpus's codec loss (bench/probe.py, table 11).
OUTLIER_COSINE = 0.5


def quantize(vectors: torch.Tensor) -> torch.Tensor:
    """Each vector scaled to 127 at its largest absolute value, rounded to int8.

    Shapes: vectors [n, dim] float -> [n, dim] int8.

    >>> quantize(torch.tensor([[0.5, -0.25, 0.0]])).tolist()
    [[127, -64, 0]]
    """
    scale = vectors.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.round(vectors.float() * (127 / scale)).clamp(-127, 127).to(torch.int8)


def encode(vectors: torch.Tensor, centroids: torch.Tensor, lengths: Sequence[int]) -> list[bytes]:
    """Each document's ``outliers`` column: the int8 rows of its tokens below OUTLIER_COSINE
    with their own centroid, document after document.

    Shapes: vectors [n, dim]; centroids [n, dim], each token's own -> one bytes per document.

    >>> rows = encode(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), torch.tensor([[1.0, 0.0]] * 3), [2, 1])
    >>> [list(r) for r in rows]
    [[0, 127], []]
    """
    far = F.cosine_similarity(vectors.float(), centroids.float(), dim=1) < OUTLIER_COSINE
    rows = quantize(vectors[far]).cpu()
    counts = [int(part.sum()) for part in torch.split(far, list(lengths))]
    return [part.numpy().tobytes() for part in torch.split(rows, counts)]


@dataclass(frozen=True)
class Outliers:
    """The outlier rows a search process holds, with the view slot of each one's document and
    each row's inverse norm (computed once, so scoring never re-normalises).

    Shapes: slots [n] int64; rows [n, dim] int8; inverse_norms [n] float32.
    """

    slots: torch.Tensor
    rows: torch.Tensor
    inverse_norms: torch.Tensor

    @classmethod
    def of(cls, slots: torch.Tensor, rows: torch.Tensor) -> Outliers:
        """Shapes: slots [n] int64; rows [n, dim] int8."""
        return cls(slots, rows, torch.linalg.vector_norm(rows.float(), dim=1).clamp(min=1.0).reciprocal())

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.slots, self.rows, self.inverse_norms))

    def extended(self, slots: torch.Tensor, rows: torch.Tensor) -> Outliers:
        """These rows and more. Shapes: slots [m] int64; rows [m, dim] int8."""
        more = Outliers.of(slots.to(self.slots.device), rows.to(self.slots.device))
        return Outliers(*(torch.cat([getattr(self, name), getattr(more, name)]) for name in ("slots", "rows", "inverse_norms")))

    def renumbered(self, renumber: torch.Tensor) -> Outliers:
        """The rows whose slot maps to a new one (``renumber[slot]`` >= 0), with it.

        Shapes: renumber [slots] int64, -1 for a slot that goes.
        """
        new = renumber.to(self.slots.device)[self.slots]
        kept = new >= 0
        return Outliers(new[kept], self.rows[kept], self.inverse_norms[kept])

    def raised(self, best: torch.Tensor, slots: torch.Tensor, query: torch.Tensor, num_slots: int) -> torch.Tensor:
        """``best`` with each document's similarity raised to its outlier rows' where those are
        higher: the 2-bit similarity of an outlier lies below its own (module docstring).

        Shapes: best [m, q], per document and query token; slots [m] int64; query [q, dim] -> [m, q].

        >>> held = Outliers.of(torch.tensor([4, 9]), torch.tensor([[0, 127], [127, 0]], dtype=torch.int8))
        >>> held.raised(torch.tensor([[0.5, 0.1]]), torch.tensor([4]), torch.eye(2), 10).tolist()
        [[0.5, 1.0]]
        """
        if not len(self):
            return best
        position = torch.full((num_slots,), -1, dtype=torch.long, device=self.slots.device)
        position[slots.to(self.slots.device)] = torch.arange(len(slots), device=self.slots.device)
        owner = position[self.slots]
        mine = torch.nonzero(owner >= 0).flatten()
        if not len(mine):
            return best
        values = rows_at(self.rows, mine).to(query.device, query.dtype)
        sims = (values @ query.T).mul_(self.inverse_norms[mine].to(query.device, query.dtype)[:, None])
        rows = owner[mine].to(best.device)[:, None].expand(-1, best.shape[1])
        return best.scatter_reduce(0, rows, sims.to(best.dtype), "amax")
