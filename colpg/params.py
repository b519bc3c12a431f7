"""Search's two knobs and their defaults: cells probed per query token, documents reranked.

``ncells``: each query token's nearest centroids whose tokens are scored (colpg.probe);
``nrerank``: the documents scored exactly, at the rerank store's precision, for the top k.
A filter that matches at most ``nrerank`` documents has all of them scored exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from colpg.errors import ConfigurationError

__all__ = ["SearchParams", "default_params"]


@dataclass(frozen=True)
class SearchParams:
    """Cells probed per query token; documents reranked at the rerank store's precision."""

    ncells: int
    nrerank: int

    def __post_init__(self) -> None:
        for name in ("ncells", "nrerank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")

    def replace(self, ncells: int | None = None, nrerank: int | None = None) -> SearchParams:
        """These parameters with the given ones changed (None keeps the current value)."""
        changes = {name: value for name, value in (("ncells", ncells), ("nrerank", nrerank)) if value is not None}
        return dataclasses.replace(self, **changes)


def default_params(k: int) -> SearchParams:
    """colpg's defaults for ``k`` results, measured to reach recall@k 0.99 against exact MaxSim
    on the encoder's own vectors (bench/probe.py, bench/README.md).

    >>> default_params(10)
    SearchParams(ncells=32, nrerank=128)
    """
    if k < 1:
        raise ConfigurationError(f"k must be positive, got {k}")
    return SearchParams(ncells=32, nrerank=max(128, 4 * k))
