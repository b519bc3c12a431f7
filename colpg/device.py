"""Device policy in one place: the GPU when there is one, half precision there, float32 on the CPU,
whether this CPU's int8 products pay, how the CPU's allocator treats search's per-query
temporaries, and how the garbage collector treats what a search process holds for good."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import time
from collections.abc import Callable

import torch

__all__ = [
    "default_device", "default_dtype", "freeze_long_lived", "int8_products_pay", "int8_products_pay_on", "keep_freed_memory", "release_freed_memory",
    "resolve_device",
]  # fmt: skip

logger = logging.getLogger(__name__)

# glibc's mallopt parameters, and what search asks of them.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks up to this size come from the heap
TRIM_THRESHOLD = 32 << 20  # free heap memory kept for the next query, at most
TOP_PAD = 8 << 20  # the heap grows by this much more than asked
ARENAS = 2  # heaps the threads share (glibc's default: up to 8 per core)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    return default_device() if device is None else torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA (bf16 where the caller asks for it), fp32 on the CPU where half precision is slow."""
    return torch.float16 if device.type == "cuda" else torch.float32


#: The block int8_products_pay times: a rerank block of int8 tokens (colpg.rerank_stage) against
#: a 32-token query in two int8 parts, at MiniLM's dim.
TRIAL_TOKENS, TRIAL_DIM, TRIAL_QUERY = 2048, 384, 32


@functools.cache
def int8_products_pay() -> bool:
    """Whether int8 x int8 products (``torch._int_mm``) beat converting int8 tokens to float here.

    It depends on the CPU, not on torch: with AVX-512 VNNI they took about half the float
    product's time (bench/probe.py, table 6), while on a CPU with AVX2 alone ``_int_mm`` was 10x
    slower than the float product (31 against 3 ms for 2,048 x 384 tokens and a 32-token query,
    measured on an AMD EPYC with AVX2). So it is measured, once per process: the better of
    three runs of each on a rerank-sized block, ~10-200 ms. Process-wide; the CPU only.
    """
    tokens = torch.randint(-127, 128, (TRIAL_TOKENS, TRIAL_DIM), dtype=torch.int8)
    parts = torch.randint(-127, 128, (TRIAL_DIM, 2 * TRIAL_QUERY), dtype=torch.int8)
    query = torch.randn(TRIAL_DIM, TRIAL_QUERY)

    def best(product: Callable[[], torch.Tensor]) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        return min(times)

    integer = best(lambda: torch._int_mm(tokens, parts).float())
    floating = best(lambda: tokens.float() @ query)
    logger.debug("int8 products %.2f ms, float %.2f ms on this CPU", 1000 * integer, 1000 * floating)
    return integer < floating


def int8_products_pay_on(device: torch.device) -> bool:
    """:func:`int8_products_pay` where ``device`` is a CPU; on a GPU, float products are used."""
    return device.type == "cpu" and int8_products_pay()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim) after a one-off burst of
    allocations, such as loading an index, or once the row cache has evicted enough
    (colpg.rowcache): the memory freed is scattered among live memory, so the heap cannot
    shrink by itself. Tens of ms on a heap of GBs. Elsewhere than glibc it does nothing."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed heap memory for reuse instead of returning it after each query,
    in two heaps that every thread shares.

    Search allocates temporaries of a few MB per query; by default glibc maps each one afresh
    and returns it when freed, so every query page-faults its memory in again (measured: an int8
    to float conversion of 24,000 x 384 values took 19.5 ms, 2.0 ms with these settings). Allocations
    up to 32 MB then come from the heap, and up to 32 MB of free heap is kept (TRIM_THRESHOLD, the
    most a query at the assembled 100k allocates at once: its probe's maxima, 2 x 12 MB). Keeping 64
    MB (and a TOP_PAD of 16) left the 100k's process 2,431 MB above its start after a hand-back, 49 MB
    more than now, at the same 4-client throughput (bench/heap_trim.py, two runs, rounds alternated:
    5.21 and 6.06 queries/s now, 5.61 and 6.06 before; session 29).

    Two heaps (arenas), because glibc gives threads up to 8 arenas per core and keeps the free top
    of every arena but the first (up to TRIM_THRESHOLD + TOP_PAD each), which
    :func:`release_freed_memory` cannot hand back: four clients on the assembled 100k left 16
    arenas and the process 2,485-2,509 MiB above its start after a hand-back, against 2,400-2,404
    with two and 2,363-2,364 with one (its resident tokens and row cache: 2,309). One heap made the
    rerank 10-20% slower (its reads, on another thread, wait for the heap's lock); two did not
    (bench/README.md, session 19). glibc fixes its arena limit when a ninth arena is made, so this
    is asked before search's threads start: arenas made before stay.

    Process-wide, done once, by the first Index, service or searcher; elsewhere than glibc it does
    nothing. Returns whether it applied.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    applied = all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
            (M_ARENA_MAX, ARENAS),
        )
    )
    logger.debug("glibc keeps freed memory for search's temporaries: %s", applied)
    return applied


def freeze_long_lived() -> None:
    """Leave the objects that exist now out of every later garbage collection (``gc.freeze``),
    once an index is loaded: the modules, the model and the index are held for good, and a full
    collection visited all of them. Measured at 100k documents: ~266,000 objects, a full
    collection 275 ms, about one every 20 queries, paid by the query that triggered it
    (bench/README.md, session 17). The young generations are collected first (a full collection
    would cost what it saves); objects frozen that are or become cyclic garbage stay. Process-wide,
    as :func:`keep_freed_memory`; ``gc.unfreeze`` undoes it."""
    gc.collect(1)
    gc.freeze()
