"""What a search returns: ranked documents inside colpg, hits for callers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from colpg.encoder import Encoder
from colpg.explain import TokenMatch, explain

__all__ = ["Hit", "Ranked", "hits"]


@dataclass(frozen=True)
class Ranked:
    """One ranked document: its row, its exact MaxSim score, and how to get its tokens at the
    precision that scored it (decoded only when asked for: explanations want them, ranking does not)."""

    document_id: int
    score: float
    decode: Callable[[], torch.Tensor]
    external_id: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    text: str | None = None

    @property
    def tokens(self) -> torch.Tensor:
        """Shapes: [tokens, dim] float, L2-normalised."""
        return self.decode()


@dataclass(frozen=True)
class Hit:
    """One search result."""

    external_id: str
    score: float
    rank: int
    metadata: dict[str, Any]
    text: str | None
    explanation: list[TokenMatch] | None = None


def hits(encoder: Encoder, query_text: str | None, query: torch.Tensor, ranked: list[Ranked], explain_matches: bool) -> list[Hit]:
    """``ranked`` as :class:`Hit`, ranked from 1, with token explanations when asked for. Shapes: query [q, dim]."""
    return [
        Hit(
            r.external_id,
            r.score,
            rank,
            r.metadata,
            r.text,
            explain(encoder, query_text, query, r.external_id, r.text, r.tokens) if explain_matches else None,
        )
        for rank, r in enumerate(ranked, start=1)
    ]
