"""Late-interaction scores: MaxSim as batched tensor maths.

MaxSim of a query and a document is the sum over query tokens of the best similarity with
any document token. Documents come as all their tokens stacked, with the document of each
token (``owner``), so nothing is padded. (Approximate scores over compressed tokens are
colpg.probe's.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "RERANK_TOKENS",
    "Int8Query",
    "grouped_query",
    "maxsim_blocks",
    "maxsim_flat",
    "maxsim_tokens",
    "owners",
    "segment_max_sum",
    "token_maxima",
    "token_runs",
]

RERANK_TOKENS = 8192  # tokens scored at once (int8 products: 13% faster than 2,048 on SciFact, search p50 in one process)


def grouped_query(query: torch.Tensor, threshold: float) -> torch.Tensor:
    """The query's tokens in groups, one row each: the sum of its tokens. A token joins the first
    group whose first token it matches with cosine ``threshold`` or more, else starts one.

    MaxSim with the groups' rows is a lower bound of the query's own, since a document's best
    token for a sum scores no more than each member's best: with ColBERT's [MASK] padding, whose
    vectors are alike (pairwise cosine ~0.94 with this project's encoder), it comes within a
    few hundredths for a third to a half of the rows (colpg.rerank_stage; bench/probe.py, table 13).

    Shapes: query [q, dim], rows unit length -> [groups, dim].

    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.96, 0.28]])
    >>> [[round(v, 2) for v in row] for row in grouped_query(q, 0.9).tolist()]
    [[1.96, 0.28], [0.0, 1.0]]
    >>> document = torch.tensor([[1.0, 0.0], [0.96, 0.28]])
    >>> [round(float((document @ rows.T).max(0).values.sum()), 2) for rows in (grouped_query(q, 0.9), q)]
    [2.24, 2.28]
    """
    similar = ((query @ query.T) >= threshold).tolist()  # walked token by token: in Python, 3x faster than tensor ops
    leader = [-1] * len(similar)
    for i, row in enumerate(similar):
        if leader[i] < 0:
            for j in range(i, len(row)):
                if leader[j] < 0 and (row[j] or j == i):  # a token leads its own group, whatever its length
                    leader[j] = i
    groups, member_of = torch.unique(torch.tensor(leader), return_inverse=True)
    return torch.zeros(len(groups), query.shape[1], dtype=query.dtype, device=query.device).index_add_(0, member_of.to(query.device), query)


def owners(lengths: list[int], device: torch.device | None = None) -> torch.Tensor:
    """The document of each stacked token. Shapes: [len(lengths)] -> [sum(lengths)].

    >>> owners([2, 1, 3]).tolist()
    [0, 0, 1, 2, 2, 2]
    """
    counts = torch.tensor(lengths, device=device)
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), counts)


def segment_max_sum(similarity: torch.Tensor, owner: torch.Tensor, num_documents: int) -> torch.Tensor:
    """Per document: the sum over query tokens of the max over its tokens.

    Shapes: similarity [q, n_tokens]; owner [n_tokens] -> [num_documents].
    """
    best = torch.full((similarity.shape[0], num_documents), float("-inf"), device=similarity.device, dtype=similarity.dtype)
    best = best.scatter_reduce(1, owner.expand(similarity.shape[0], -1), similarity, "amax")
    return best.sum(dim=0)


def maxsim_flat(queries: torch.Tensor, tokens: torch.Tensor, owner: torch.Tensor, num_documents: int) -> torch.Tensor:
    """MaxSim of each query against each document.

    Shapes: queries [n_q, q, dim]; tokens [n_tokens, dim]; owner [n_tokens] -> [n_q, num_documents].

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> d = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> [round(score, 4) for score in maxsim_flat(q, d, owners([2, 1]), 2)[0].tolist()]
    [1.8, 1.0]
    """
    out = torch.empty(queries.shape[0], num_documents, device=tokens.device)
    for i, query in enumerate(queries):
        out[i] = segment_max_sum(query.to(tokens.dtype) @ tokens.T, owner, num_documents).float()
    return out


def token_maxima(similarity: torch.Tensor, owner: torch.Tensor, num_documents: int) -> torch.Tensor:
    """Per document and query token, the best similarity of the document's tokens (-inf where it has none).

    Shapes: similarity [n_tokens, q]; owner [n_tokens] -> [num_documents, q].

    >>> sims = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> [[round(v, 2) for v in row] for row in token_maxima(sims, owners([2, 1]), 2).tolist()]
    [[1.0, 0.8], [0.0, 1.0]]
    """
    best = torch.full((num_documents, similarity.shape[1]), float("-inf"), device=similarity.device, dtype=similarity.dtype)
    return best.scatter_reduce_(0, owner[:, None].expand(-1, similarity.shape[1]), similarity, "amax")


def maxsim_tokens(similarity: torch.Tensor, owner: torch.Tensor, num_documents: int) -> torch.Tensor:
    """MaxSim per document from token-major similarities (the faster orientation of the matmul on CPU).

    Shapes: similarity [n_tokens, q]; owner [n_tokens] -> [num_documents].

    >>> sims = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> [round(s, 4) for s in maxsim_tokens(sims, owners([2, 1]), 2).tolist()]
    [1.8, 1.0]
    """
    return token_maxima(similarity, owner, num_documents).sum(dim=1)


def token_runs(lengths: Sequence[int], limit: int = RERANK_TOKENS) -> list[range]:
    """Consecutive documents grouped so that each run holds at most ``limit`` tokens (a longer
    document alone), the blocks the rerank scores at once.

    >>> token_runs([5, 3, 4, 9, 1], limit=8)
    [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    """
    runs, start, tokens = [], 0, 0
    for n, length in enumerate(lengths):
        if n > start and tokens + length > limit:
            runs.append(range(start, n))
            start, tokens = n, 0
        tokens += length
    return [*runs, range(start, len(lengths))] if len(lengths) > start else runs


def maxsim_blocks(similarity: Callable[[list[torch.Tensor]], torch.Tensor], rows: list[torch.Tensor], device: torch.device) -> list[float]:
    """MaxSim of each document from a token-level ``similarity`` of its rows (a rerank store's,
    colpg.stores), in blocks of about RERANK_TOKENS tokens so that each block's temporaries stay
    a few MB. Shapes: rows [n_i, width]; similarity: rows -> [sum n_i, q] on ``device``.

    >>> rows = [torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([[0.0, 1.0]])]
    >>> [round(s, 4) for s in maxsim_blocks(lambda block: torch.cat(block), rows, torch.device("cpu"))]
    [1.8, 1.0]
    """
    scores: list[float] = []
    for run in token_runs([row.shape[0] for row in rows]):
        block = rows[run.start : run.stop]
        scores += maxsim_tokens(similarity(block), owners([row.shape[0] for row in block], device), len(block)).tolist()
    return scores


def int8_steps(vectors: torch.Tensor) -> torch.Tensor:
    """Each row's step to int8: its largest magnitude / 127 (at least float32's smallest normal).

    Shapes: vectors [n, dim] -> [n, 1].

    >>> [round(step, 6) for step in int8_steps(torch.tensor([[0.5, -1.27], [0.0, 0.0]])).flatten().tolist()]
    [0.01, 0.0]
    """
    return vectors.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127


@dataclass(frozen=True)
class Int8Query:
    """A query prepared for int8 products with int8 tokens on the CPU, once for all its blocks.

    Each query token is written as ``step * (high + low / 254)`` with int8 ``high`` and ``low``
    (``step``: its largest magnitude / 127), so it is off by at most ``step / 508`` per value,
    millionths of a similarity and far below the int8 tokens' own rounding. Both parts go
    through one int8 product with int32 sums (no overflow: 127 * 127 * dim < 2**31 up to dim
    133,000), which skips converting every token to float. ``high`` alone (``parts=1``) halves
    the product but moves scores by up to 0.03 and the top 10 with them (bench/probe.py, table 6).

    Shapes: parts [dim, parts * q] int8 (high, then low); step [1, q].
    """

    parts: torch.Tensor
    step: torch.Tensor

    @classmethod
    def of(cls, query: torch.Tensor, parts: int = 2) -> Int8Query:
        """Shapes: query [q, dim] float; ``parts``: 1 (high) or 2 (high and low)."""
        if parts not in (1, 2):
            raise ValueError(f"an int8 query has 1 or 2 parts, got {parts}")
        step = int8_steps(query)
        scaled = query / step
        high = scaled.round()
        kept = [high, ((scaled - high) * 254).round()][:parts]
        return cls(torch.cat(kept).to(torch.int8).T.contiguous(), step.T)

    def products(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens.float() @ query.T``. Shapes: tokens [n, dim] int8 -> [n, q] float32.

        >>> tokens = torch.tensor([[127, 0], [-64, 64]], dtype=torch.int8)
        >>> [round(v, 3) for v in Int8Query.of(torch.tensor([[0.5, 0.25]])).products(tokens).flatten().tolist()]
        [63.5, -16.0]
        >>> [round(v, 3) for v in Int8Query.of(torch.tensor([[0.5, 0.25]]), parts=1).products(tokens).flatten().tolist()]
        [63.5, -15.874]
        """
        products = torch._int_mm(tokens, self.parts).float()
        q = self.step.shape[1]
        if products.shape[1] > q:
            products = products[:, :q] + products[:, q:] / 254
        return products * self.step
