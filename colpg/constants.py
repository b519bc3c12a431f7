"""Facts that several layers must agree on, written once.

The SQL files repeat them in CHECK constraints (a migration is frozen once released);
tests/test_migrations.py checks that the migrated database says the same.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["DEFAULT_FUSION", "DEFAULT_MATCH", "INDEX_NAME_PATTERN", "NBITS", "Fusion", "Match"]

#: Bits per residual dimension an index may use.
NBITS = (1, 2, 4)

#: What an index name may be: it appears in URLs, SQL and the CLI unquoted.
INDEX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"

#: How a hybrid search ranks the union of its candidates: exact MaxSim, or reciprocal-rank fusion
#: of the lists. RRF by default: the best pipeline on SciFact, NFCorpus and MS MARCO 5k (bench/README.md, hybrid.py).
Fusion = Literal["maxsim", "rrf"]
DEFAULT_FUSION: Fusion = "rrf"

#: Which documents the full-text stage finds: those with every word of the query
#: (websearch_to_tsquery: quotes, or, -word) or those with any of its words (an OR of its lexemes),
#: as colpg.fulltext_query takes it. "any" by default: the better first stage for natural-language
#: queries (bench/README.md, hybrid.py); migration 0007's colpg.fulltext_candidates defaults to the same.
Match = Literal["all", "any"]
DEFAULT_MATCH: Match = "any"
