"""colpg: ColBERT late-interaction retrieval (Jina-ColBERT) that lives in PostgreSQL."""

from __future__ import annotations

from colpg.errors import ColpgError

__all__ = ["ColpgError", "__version__"]

__version__ = "0.1.0"
