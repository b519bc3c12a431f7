"""Facts that several layers must agree on, written once.

The SQL files repeat them in CHECK constraints (a migration is frozen once released);
tests/test_migrations.py checks that the migrated database says the same.
"""

from __future__ import annotations

__all__ = ["INDEX_NAME_PATTERN", "NBITS"]

#: Bits per residual dimension an index may use.
NBITS = (1, 2, 4)

#: What an index name may be: it appears in URLs, SQL and the CLI unquoted.
INDEX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
