"""A byte-capped LRU cache of rerank rows, so the final rerank rarely reads vectors from PostgreSQL.

Entries are keyed by document id and the token row's version (PostgreSQL's ``xmin``, which
every search reads in its own snapshot), so a rewritten document is never served from an
old entry. The least recently used entries go first once the cap is reached; an entry
larger than the cap is not kept at all. Thread-safe: the lock covers dictionary updates
only, never a database call.

Evicted rows leave holes among the rows still cached, which the heap cannot give back by
itself: on the assembled 100k the search process held 4,072 MB against a bound of 2,403 (its
tokens and the cap), much of it free heap. So the cache counts what it evicts, and
:meth:`RowCache.trim_due` tells the searcher when to hand the free heap back (colpg.device):
3,266 MB in the same benchmark, 2,760 right after a hand-back (bench/README.md, session 14).

Each entry also costs memory beyond its token bytes (the tensor's objects, the dictionary's entry,
the allocator's headers): :data:`ENTRY_OVERHEAD`, counted against the cap, so that the cap bounds
what the cache holds rather than only its rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from colpg.env import byte_count
from colpg.errors import ConfigurationError

__all__ = ["CACHE_BYTES_ENV", "DEFAULT_CACHE_BYTES", "ENTRY_OVERHEAD", "RowCache", "cache_bytes_from_env"]

CACHE_BYTES_ENV = "COLPG_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 1 << 30
#: Free heap is handed back once a quarter of the cap (at least TRIM_MIN_BYTES) has been evicted.
TRIM_SHARE = 4
TRIM_MIN_BYTES = 64 << 20
#: Memory an entry holds besides its token bytes: 671, 868 and 1,727 bytes for rows of 32, 128 and
#: 512 tokens of 388 bytes (bench/cache_memory.py; the allocator's rounding grows with the row): rows
#: of 512 tokens are under-counted by ~700 bytes, 0.35% of their size.
ENTRY_OVERHEAD = 1024


def cache_bytes_from_env() -> int:
    """``$COLPG_CACHE_BYTES`` (a byte count, 0 to cache nothing), else 1 GiB."""
    return byte_count(CACHE_BYTES_ENV, DEFAULT_CACHE_BYTES, least=0)


class RowCache:
    """document id -> (version, tokens as bytes), holding at most ``max_bytes``: each entry's token
    bytes plus ``entry_overhead``.

    >>> cache = RowCache(max_bytes=16, entry_overhead=2)
    >>> cache.put(1, 100, torch.zeros(1, 6, dtype=torch.uint8)); cache.put(2, 100, torch.zeros(1, 6, dtype=torch.uint8))
    >>> sorted(cache.get_many([1, 2], [100, 100])), sorted(cache.get_many([2], [101])), cache.bytes
    ([1, 2], [], 16)
    >>> cache.put(3, 100, torch.zeros(1, 6, dtype=torch.uint8)); sorted(cache.get_many([1, 2, 3], [100, 100, 100])), cache.bytes
    ([2, 3], 16)
    >>> cache.evicted, cache.trim_due(trim_bytes=8), cache.trim_due(trim_bytes=8), cache.evicted
    (8, True, False, 0)
    """

    def __init__(self, max_bytes: int, entry_overhead: int = ENTRY_OVERHEAD) -> None:
        if max_bytes < 0:
            raise ConfigurationError(f"the row cache's size must be 0 or more bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.entry_overhead = entry_overhead
        #: What the entries hold, counted against ``max_bytes``.
        self.bytes = 0
        #: Bytes evicted or replaced since :meth:`trim_due` last said yes.
        self.evicted = 0
        self._entries: OrderedDict[int, tuple[int, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _size(self, tokens: torch.Tensor) -> int:
        return tokens.numel() * tokens.element_size() + self.entry_overhead

    def get_many(self, ids: Sequence[int], versions: Sequence[int | None]) -> dict[int, torch.Tensor]:
        """The rows of ``ids`` held at ``versions`` (None: never held), under one hold of the lock (a rerank step's)."""
        found = {}
        with self._lock:
            for document_id, version in zip(ids, versions, strict=True):
                entry = self._entries.get(document_id)
                if entry is not None and entry[0] == version:
                    self._entries.move_to_end(document_id)
                    found[document_id] = entry[1]
        return found

    def put(self, document_id: int, version: int, tokens: torch.Tensor) -> None:
        size = self._size(tokens)
        with self._lock:
            old = self._entries.pop(document_id, None)
            if old is not None:
                self._forget(old[1])
            if size > self.max_bytes:
                return
            self._entries[document_id] = (version, tokens)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._forget(evicted)

    def _forget(self, tokens: torch.Tensor) -> None:
        """Count an entry's removal (the lock held)."""
        size = self._size(tokens)
        self.bytes -= size
        self.evicted += size

    def trim_due(self, trim_bytes: int | None = None) -> bool:
        """Whether ``trim_bytes`` (default: a TRIM_SHARE-th of the cap, at least TRIM_MIN_BYTES) have been
        evicted since it last said yes: then the caller returns the free heap (colpg.device.release_freed_memory)."""
        limit = max(TRIM_MIN_BYTES, self.max_bytes // TRIM_SHARE) if trim_bytes is None else trim_bytes
        with self._lock:
            if self.evicted < limit:
                return False
            self.evicted = 0
            return True

    def clear(self) -> None:
        """Forget every entry; their bytes count as evicted (:meth:`trim_due`)."""
        with self._lock:
            self._entries.clear()
            self.evicted += self.bytes
            self.bytes = 0
