"""colpg's CPU kernels (kernel.c beside this file), compiled with the machine's C compiler at first use.

kernel.c holds the loops PyTorch runs in several passes through memory: the probe's
(colpg.kernel) and the int8 rerank store's (colpg.int8_kernel). The library is built once per
source, compiler and CPU, with ``-O3 -march=native``, into the user cache (~0.5 s), and loaded
from there by later processes. Where no C compiler is found or the build fails, a warning says
so once and searches run in PyTorch, with the same results; ``COLPG_KERNEL=off`` asks for
PyTorch outright. ctypes releases the GIL during a call, so one stage's parts run on threads
(colpg.threads).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import platformdirs
import torch

from colpg.env import switch

__all__ = ["KERNEL_ENV", "kernel_enabled", "library", "padded"]

logger = logging.getLogger(__name__)

KERNEL_ENV = "COLPG_KERNEL"
SOURCE = Path(__file__).with_name("kernel.c")
#: Flags tried in order: the first that compiles is kept (some compilers lack -march=native).
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))
COMPILE_TIMEOUT_S = 120


def kernel_enabled() -> bool:
    """Whether ``$COLPG_KERNEL`` leaves the kernels on (the default; off/0/false/no turn them off,
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
    """The kernels, compiled on first use; None (with one warning) where they cannot be built or loaded."""
    compiler = shutil.which(os.environ.get("CC", "").strip() or "cc")
    if compiler is None:
        logger.warning("colpg's CPU kernels need a C compiler (cc, or $CC) and none was found: searches run in PyTorch, slower")
        return None
    try:
        lib = ctypes.CDLL(str(_compile(compiler, folder or platformdirs.user_cache_path("colpg") / "kernel")))
    except OSError as error:
        logger.warning("colpg's CPU kernels could not be built or loaded, so searches run in PyTorch, slower: %s", error)
        return None
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    signatures = {
        "colpg_number": ([pointer, pointer, pointer, count, pointer, pointer, count], count),
        "colpg_score": (
            [pointer, pointer, pointer, count, count, pointer, pointer, pointer, pointer, count, pointer, pointer, pointer, count, count],
            None,
        ),
        "colpg_score_documents": (
            [pointer, pointer, pointer, count, count, pointer, count, pointer, pointer, pointer, pointer, count, pointer]
            + [pointer, count, count],
            None,
        ),
        "colpg_floored": ([pointer, count, count, count, pointer, ctypes.c_float, pointer, pointer], None),
        "colpg_int8_raws": ([pointer, pointer, count, count, pointer, pointer], None),
        "colpg_int8_maxsim": ([pointer, pointer, count, count, pointer, count, count, pointer, pointer, pointer, count, count], None),
        "colpg_int8_integer_maxsim": (
            [pointer, pointer, count, count, pointer, pointer, count, count, pointer, pointer, pointer, count, count],
            None,
        ),
    }
    for name, (arguments, result) in signatures.items():
        if not hasattr(lib, name):  # built only where the CPU has it (colpg_int8_integer)
            continue
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, result
    return lib


def padded(values: torch.Tensor, columns: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``values`` [n, c] with zero columns up to ``columns``, contiguous: the kernels take query tokens in fixed-width lanes.
    Values that are that already come back as they are, not copied (a 100k index's centroid scores: 4 MB a query).

    >>> values = torch.ones(2, 4)
    >>> padded(values, 4) is values, padded(values, 8)[0].tolist()
    (True, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    """
    if values.shape[1] == columns and values.dtype == dtype and values.device.type == "cpu" and values.is_contiguous():
        return values
    out = torch.zeros(values.shape[0], columns, dtype=dtype)
    out[:, : values.shape[1]] = values
    return out
