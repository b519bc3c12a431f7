"""ColBERT's encoding settings: marker tokens, query and document lengths, punctuation skiplist.

A checkpoint carries them in its ColBERT metadata (Stanford's ``artifact.metadata``, or a
``colbert_config`` object in config.json); what the caller passes wins over both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from colpg.errors import ConfigurationError

__all__ = ["EncoderSettings"]

SIMILARITIES = ("cosine",)  # MaxSim over L2-normalised vectors; ColBERT's "l2" is not implemented
SPECIAL_TOKENS_PER_TEXT = 3  # [CLS], the query/document marker, [SEP]


@dataclass(frozen=True)
class EncoderSettings:
    """How texts become ColBERT token sequences; ``dim`` is None until the checkpoint says."""

    query_maxlen: int = 32
    doc_maxlen: int = 220
    dim: int | None = None
    query_token_id: str = "[unused0]"
    doc_token_id: str = "[unused1]"
    attend_to_mask_tokens: bool = False
    mask_punctuation: bool = True
    similarity: str = "cosine"

    def __post_init__(self) -> None:
        for name in ("query_maxlen", "doc_maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= SPECIAL_TOKENS_PER_TEXT:
                raise ConfigurationError(f"{name} must be an integer above {SPECIAL_TOKENS_PER_TEXT}, got {value!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ConfigurationError(f"dim must be a positive integer, got {self.dim!r}")
        if self.similarity not in SIMILARITIES:
            raise ConfigurationError(
                f"similarity must be one of {', '.join(SIMILARITIES)} (colpg scores MaxSim over L2-normalised vectors),"
                f" got {self.similarity!r}"
            )

    @classmethod
    def from_mappings(cls, *layers: Mapping[str, Any] | None) -> EncoderSettings:
        """Merge settings, later layers winning; keys that are not settings (nbits, ...) are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update({key: value for key, value in (layer or {}).items() if key in names and value is not None})
        return cls(**merged)

    def replace(self, **changes: Any) -> EncoderSettings:
        return dataclasses.replace(self, **changes)
