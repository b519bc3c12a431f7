"""colpg's worker threads: a pool for the parts of a stage that run side by side, and one that reads rows.

The CPU kernels (colpg.native) release the GIL, so a probe's or a rerank's parts run on the
parts pool's threads (:func:`run_parts`), and the rerank reads its next rows from PostgreSQL
while it scores these (colpg.rerank_stage) on the reads pool's (:func:`read`). Reads never wait
on parts, so neither pool can starve the other. The reads pool is small on purpose: glibc gives
each thread that allocates its own heap, and rows freed by the row cache's evictions leave holes
that only their own heap's next allocations fill; with the rows read on a few threads, the next
reads fill them. A forked child starts pools of its own.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["even_runs", "read", "run_parts"]

P = ParamSpec("P")
T = TypeVar("T")

#: Threads that read rerank rows (and so allocate what the row cache holds).
READERS = 2
#: Threads that run parts: one per CPU (looked up once: run_parts is called per rerank step).
PARTS = max(1, os.cpu_count() or 1)

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(name: str, workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"colpg-{name}")
        return _pools[name]


def _forget_pools() -> None:
    """A forked child has none of its parent's threads: it starts pools of its own."""
    global _pools, _pools_lock
    _pools, _pools_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def run_parts(work: Callable[[int], None], parts: int) -> None:
    """``work(part)`` for each of ``parts``: the first on the calling thread, the rest on the parts pool's."""
    pool = _pool("parts", PARTS)
    others = [pool.submit(work, part) for part in range(1, parts)]
    work(0)
    for future in others:
        future.result()


def read(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``work(*args, **kwargs)`` on the reads pool."""
    return _pool("reads", READERS).submit(work, *args, **kwargs)


def even_runs(counts: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """``parts`` runs of consecutive items (cells, documents) with about equal tokens, for :func:`run_parts`
    (plain Python: a few parts of a few thousand items, called per rerank step).

    >>> even_runs([5, 1, 1, 1, 4], 2)
    [(0, 2), (2, 5)]
    """
    ends = list(itertools.accumulate(counts))
    total = ends[-1] if ends else 0
    bounds = [0, *(min(bisect.bisect_left(ends, total * part / parts) + 1, len(ends)) for part in range(1, parts)), len(ends)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
