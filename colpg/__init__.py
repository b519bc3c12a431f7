"""colpg: ColBERT late-interaction retrieval (Jina-ColBERT) that lives in PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from colpg.errors import ColpgError

if TYPE_CHECKING:
    from colpg.reranking import rerank_texts as rerank

__all__ = ["ColpgError", "__version__", "rerank"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``colpg.rerank`` (:func:`colpg.reranking.rerank_texts`), imported on first use: it needs
    torch and the model code, which ``import colpg`` alone must not load."""
    if name == "rerank":
        from colpg.reranking import rerank_texts

        globals()["rerank"] = rerank_texts
        return rerank_texts
    raise AttributeError(f"module 'colpg' has no attribute {name!r}")
