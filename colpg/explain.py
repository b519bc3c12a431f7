"""Why a document scored what it did: for each query token, the document token that gave its maximum."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from colpg.encoder import Encoder
from colpg.errors import EncodingError

__all__ = ["TokenMatch", "explain"]


@dataclass(frozen=True)
class TokenMatch:
    """For one query token: the document token that gave its maximum, and the similarity."""

    query_token: str
    document_token: str
    document_position: int
    similarity: float


def explain(
    encoder: Encoder, query_text: str | None, query: torch.Tensor, external_id: str, text: str | None, tokens: torch.Tensor
) -> list[TokenMatch]:
    """Per query token, the best document token, named by re-tokenising the stored text (no extra storage).

    Shapes: query [q, dim]; tokens [t, dim], the document's tokens at the precision that scored it.
    """
    tokenizer = encoder.tokenizer
    if text is None:
        raise EncodingError(f"document {external_id!r} has no stored text to explain")
    sequence = tokenizer.document_ids([text], warn=False)[0]
    keep = tokenizer.documents([sequence]).keep[0]
    doc_tokens = [t for t, kept in zip(tokenizer.tokens(sequence), keep.tolist(), strict=True) if kept]
    query_tokens = tokenizer.tokens(tokenizer.queries([query_text]).input_ids[0].tolist()) if query_text else []
    best = (query.to(tokens) @ tokens.T).max(dim=1)  # over document tokens, per query token
    return [
        TokenMatch(
            query_tokens[q] if q < len(query_tokens) else f"#{q}",
            doc_tokens[p] if p < len(doc_tokens) else f"#{p}",
            int(p),
            float(s),
        )
        for q, (s, p) in enumerate(zip(best.values.tolist(), best.indices.tolist(), strict=True))
    ]
