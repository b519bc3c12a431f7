"""colpg's worker threads: one process-wide pool for the parts of a stage that run side by side.

The CPU kernels (colpg.native) release the GIL, so a probe's or a rerank's parts run on the
pool's threads (:func:`run_parts`), and the rerank reads its next rows from PostgreSQL while it
scores these (colpg.rerank_stage). Reads never wait on the pool, so they cannot starve the
parts waiting behind them; the pool has threads for both. A forked child starts a pool of its own.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import torch

__all__ = ["even_runs", "run_parts", "submit"]

P = ParamSpec("P")
T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:  # a thread per core for kernel parts, and more for reads (which wait on sockets)
            _pool = ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1) + 4, thread_name_prefix="colpg")
        return _pool


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it starts a pool of its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def run_parts(work: Callable[[int], None], parts: int) -> None:
    """``work(part)`` for each of ``parts``: the first on the calling thread, the rest on the pool's."""
    others = [_executor().submit(work, part) for part in range(1, parts)]
    work(0)
    for future in others:
        future.result()


def submit(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``work(*args, **kwargs)`` on the pool."""
    return _executor().submit(work, *args, **kwargs)


def even_runs(counts: torch.Tensor, parts: int) -> list[tuple[int, int]]:
    """``parts`` runs of consecutive items (cells, documents) with about equal tokens, for :func:`run_parts`.
    Shapes: counts [n] tokens per item.

    >>> even_runs(torch.tensor([5, 1, 1, 1, 4]), 2)
    [(0, 2), (2, 5)]
    """
    ends = torch.searchsorted(torch.cumsum(counts, 0), torch.arange(1, parts + 1) * int(counts.sum()) / parts, right=False)
    bounds = [0, *(min(int(e) + 1, len(counts)) for e in ends[:-1]), len(counts)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
