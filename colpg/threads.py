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

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["read", "run_parts"]

logger = logging.getLogger(__name__)

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
    """``work(part)`` for each of ``parts``: the first on the calling thread, the rest on the parts pool's.

    Returns when the first returns, without waiting for the others: the parts are kernel.c's,
    which share their items, and whose first finishes the call's work, cancelling the parts that
    have not started by then (a pool thread woken on the other CPU started 0.1-5 ms late on this
    project's VMs) and waiting for the running ones. What a late part raises is logged.
    """
    pool = _pool("parts", PARTS)
    for part in range(1, parts):
        pool.submit(work, part).add_done_callback(_log_failure)
    work(0)


def _log_failure(future: Future[None]) -> None:
    if (error := future.exception()) is not None:
        logger.error("a part of a kernel's call failed: %r", error)


def read(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``work(*args, **kwargs)`` on the reads pool."""
    return _pool("reads", READERS).submit(work, *args, **kwargs)
