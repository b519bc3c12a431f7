"""A process's resident memory, from /proc: stdlib only, so PLAID's venv imports it as colpg's does."""

from __future__ import annotations

import os


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
