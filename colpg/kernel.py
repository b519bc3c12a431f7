"""The probe's fused kernel (kernel.c beside this file), compiled with the machine's C compiler at first use.

colpg.probe scores probed tokens either in PyTorch (three passes through memory: gather the
residuals, sum table rows into [tokens, q], scatter per-document maxima) or here in one pass
that keeps each token's sums in registers; bench/kernel.py measures the two side by side on a
built index. The library is built once per source, compiler and CPU, with ``-O3
-march=native``, into the user cache (~0.5 s), and loaded from there by later processes. Where
no C compiler is found or the build fails, a warning says so once and searches score in
PyTorch, with the same results; ``COLPG_KERNEL=off`` asks for PyTorch outright. The CPU only,
and only for probes of at least MIN_TOKENS tokens: below that PyTorch is as fast.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import logging
import os
import platform
import shutil
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import platformdirs
import torch

from colpg.env import switch
from colpg.layout import ClusterLayout

__all__ = ["KERNEL_ENV", "fused_best", "kernel_enabled", "kernel_for", "library"]

logger = logging.getLogger(__name__)

KERNEL_ENV = "COLPG_KERNEL"
SOURCE = Path(__file__).with_name("kernel.c")
#: Flags tried in order: the first that compiles is kept (some compilers lack -march=native).
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))
#: The most an int16 table's entries for one token may sum to (int16 holds 32,767).
INT16_SUM = 32_000
#: Tokens below which a probe runs on the calling thread alone: a thread's start costs more.
MIN_PART_TOKENS = 16_384
#: Probes of fewer tokens stay in PyTorch, which is as fast there (bench/kernel.py, 2 CPU cores:
#: the kernel took 0.92-1.05x PyTorch's speed at 20,000-52,000 tokens, 1.20-1.32x at
#: 80,000-152,000, 1.78-1.86x at 450,000-640,000).
MIN_TOKENS = 65_536
COMPILE_TIMEOUT_S = 120

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def kernel_enabled() -> bool:
    """Whether ``$COLPG_KERNEL`` leaves the kernel on (the default; off/0/false/no turn it off,
    and anything else than those and on/1/true/yes is an error that names the variable)."""
    return switch(KERNEL_ENV, default=True)


def _cpu() -> str:
    """What the compiled code depends on besides the source and the compiler: the CPU's features."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compile(compiler: str, folder: Path) -> Path:
    """The library built from SOURCE (or found built), keyed by source, compiler and CPU."""
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), compiler.encode(), " ".join(flags).encode(), _cpu().encode()]))
        target = folder / f"kernel-{key.hexdigest()[:16]}.so"
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        command = [compiler, *flags, "-shared", "-fPIC", "-o", str(partial), str(SOURCE)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            partial.unlink(missing_ok=True)  # a compiler stopped mid-write leaves no half library
            errors.append(f"{' '.join(command)}: {error}")
            continue
        if done.returncode == 0:
            os.replace(partial, target)  # atomic: a process racing this one loads a whole file or builds its own
            return target
        partial.unlink(missing_ok=True)
        errors.append(f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    raise OSError("; ".join(errors))


@functools.cache
def library(folder: Path | None = None) -> ctypes.CDLL | None:
    """The kernel, compiled on first use; None (with one warning) where it cannot be built or loaded."""
    compiler = shutil.which(os.environ.get("CC", "").strip() or "cc")
    if compiler is None:
        logger.warning("colpg's probe kernel needs a C compiler (cc, or $CC) and none was found: searches score in PyTorch, slower")
        return None
    try:
        lib = ctypes.CDLL(str(_compile(compiler, folder or platformdirs.user_cache_path("colpg") / "kernel")))
    except OSError as error:
        logger.warning("colpg's probe kernel could not be built or loaded, so searches score in PyTorch, slower: %s", error)
        return None
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    lib.colpg_number.argtypes = [pointer, pointer, pointer, count, pointer, pointer, count]
    lib.colpg_number.restype = count
    lib.colpg_score.argtypes = [pointer, pointer, pointer, count, count, pointer, pointer, pointer, pointer, count, pointer, pointer]
    lib.colpg_score.restype = None
    return lib


def kernel_for(tokens: int, device: torch.device) -> ctypes.CDLL | None:
    """The kernel where it pays for scoring ``tokens`` on ``device`` and is not turned off; else None (PyTorch)."""
    if not kernel_enabled() or device.type != "cpu" or tokens < MIN_TOKENS:  # a malformed setting is reported at every size
        return None
    return library()


def _padded(values: torch.Tensor, columns: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``values`` [n, q] with zero columns up to ``columns``, contiguous."""
    out = torch.zeros(values.shape[0], columns, dtype=dtype)
    out[:, : values.shape[1]] = values
    return out


def int16_table(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``table`` in int16 units of a scale per query token, small enough that one entry per residual
    byte sums to at most INT16_SUM; each entry is within half a unit of its value (a token's
    similarity moved by 1e-3 at most on SciFact's queries, less than float16 sums move it).

    Shapes: table [width * 256, q] -> ([width * 256, q] int16, [q] float32).

    >>> values, scale = int16_table(torch.tensor([[0.5, -0.01], [-0.25, 0.02]] * 128))
    >>> values[:2].tolist(), (values.long().abs().amax(0) * (len(values) // 256) <= INT16_SUM).tolist()
    ([[32000, -16000], [-16000, 32000]], [True, True])
    """
    width = table.shape[0] // 256
    scale = (table.abs().amax(dim=0) * width / INT16_SUM).clamp_(min=torch.finfo(torch.float32).tiny)
    return torch.round(table / scale).to(torch.int16), scale.float()


def _parts(counts: torch.Tensor, parts: int) -> list[tuple[int, int]]:
    """``parts`` runs of cells with about equal tokens. Shapes: counts [c] tokens per cell.

    >>> _parts(torch.tensor([5, 1, 1, 1, 4]), 2)
    [(0, 2), (2, 5)]
    """
    ends = torch.searchsorted(torch.cumsum(counts, 0), torch.arange(1, parts + 1) * int(counts.sum()) / parts, right=False)
    bounds = [0, *(min(int(e) + 1, len(counts)) for e in ends[:-1]), len(counts)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="colpg-probe")
        return _pool


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it starts a pool of its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def fused_best(
    lib: ctypes.CDLL, table: torch.Tensor, centroid_scores: torch.Tensor, cells: torch.Tensor, segments: Sequence[ClusterLayout], slots: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For every document owning a token of ``cells``: its slot and, per query token, its best
    token's similarity; and the tokens scored. What colpg.probe computes in PyTorch.

    Shapes: table [residual_bytes * 256, q] float32 (:meth:`ResidualCodec.residual_table`);
    centroid_scores [q, num_centroids]; cells [c] int64 -> ([m] int64 slots, [m, q] float32, tokens).
    """
    q = table.shape[1]
    width = table.shape[0] // 256
    lanes = ctypes.c_int64.in_dll(lib, "colpg_lanes").value  # query tokens kernel.c takes at a time: q is padded to a multiple
    columns = -(-q // lanes) * lanes
    values, scale = int16_table(table.float())
    values, scale = _padded(values, columns, torch.int16), _padded(scale[None], columns)
    cells = cells.to(torch.int64).contiguous()
    cell_scores = _padded(centroid_scores[:, cells].T.float(), columns)
    local_of = torch.full((slots,), -1, dtype=torch.int32)
    numbered = torch.empty(slots, dtype=torch.int32)
    count = 0
    work = []
    for layout in segments:
        offsets, residuals, owners = layout.offsets.contiguous(), layout.residuals.contiguous(), layout.owners.contiguous()
        if residuals.shape[1] != width or owners.dtype != torch.int32 or residuals.dtype != torch.uint8:
            raise ValueError(
                f"a layout of {width}-byte uint8 residuals and int32 owners was expected, got {residuals.dtype} {list(residuals.shape)}, {owners.dtype}"
            )
        count = lib.colpg_number(
            offsets.data_ptr(), owners.data_ptr(), cells.data_ptr(), len(cells), local_of.data_ptr(), numbered.data_ptr(), count
        )
        work.append((offsets, residuals, owners, offsets[cells + 1] - offsets[cells]))
    tokens = sum(int(counts.sum()) for *_, counts in work)
    parts = max(1, min(torch.get_num_threads(), tokens // MIN_PART_TOKENS))
    runs = [(offsets, residuals, owners, _parts(counts, parts) if len(counts) else []) for offsets, residuals, owners, counts in work]
    bests = [torch.full((count, columns), float("-inf")) for _ in range(parts)]

    def score(part: int) -> None:
        best = bests[part]
        for offsets, residuals, owners, cuts in runs:
            if part >= len(cuts):
                continue
            lo, hi = cuts[part]
            lib.colpg_score(
                values.data_ptr(), scale.data_ptr(), cell_scores[lo:].data_ptr(), columns, width, offsets.data_ptr(), residuals.data_ptr(),
                owners.data_ptr(), cells[lo:].data_ptr(), hi - lo, local_of.data_ptr(), best.data_ptr(),
            )  # fmt: skip

    others = [_executor().submit(score, part) for part in range(1, parts)]
    score(0)
    best = bests[0]
    for other, future in zip(bests[1:], others, strict=True):
        future.result()
        torch.maximum(best, other, out=best)
    return numbered[:count].long(), best[:, :q], tokens
