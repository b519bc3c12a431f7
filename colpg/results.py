"""What a search returns: ranked documents inside colpg, hits for callers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from colpg.explain import TokenMatch

__all__ = ["Hit", "Ranked"]


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
