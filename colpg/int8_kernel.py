"""The int8 rerank store's rows in C (colpg_int8_raws, colpg_int8_maxsim and colpg_int8_integer_maxsim in kernel.c, built by colpg.native).

Where int8 products do not pay in PyTorch (colpg.device.int8_products_pay: a CPU without
AVX-512 VNNI), PyTorch scores int8 rows by converting a block of tokens to float, multiplying it
by the query and scattering per-document maxima: three passes, and a fourth when the rows are
read, to compute each token's inverse norm. Here each document keeps its maxima as it goes and
rows read are copied and their norms computed in one pass. With AVX2 the products are integer:
the query as colpg.scoring.Int8Query's two int8 parts in one int16, one 16-bit multiply-add per
pair of dimensions (with AVX-512 VNNI, fused, 32 dimensions a step), so the scores are the integer
path's (the float ones to millionths). With AVX-512 VNNI this kernel is used even where PyTorch's
int8 products pay, as it scores faster than they do (:func:`wide_kernel`).
Elsewhere in float: a row's tokens are converted a few at a time into a buffer that stays in
the L1 cache and their similarities with 16 query tokens stay in registers over all dimensions,
the same float32 arithmetic as PyTorch's summed in another order. bench/rows.py times each
way. The CPU only; dimensions a multiple of 16 (MiniLM's 384, JinaBERT's 768)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

import torch

from colpg.native import kernel_enabled, library, padded
from colpg.scoring import Int8Query
from colpg.threads import run_parts

__all__ = ["int8_kernel", "integer_kernel", "maxsim_scorer", "raws", "wide_kernel"]

#: Tokens below which rows are scored on the calling thread alone: a thread's start costs more.
MIN_PART_TOKENS = 4_096
#: The integer type of a C pointer's width, for arrays of addresses.
POINTER = torch.int64 if ctypes.sizeof(ctypes.c_void_p) == 8 else torch.int32
#: Dimensions the kernels take at a time: a row's must be a multiple (kernel.c's 16-value loads).
DIM_MULTIPLE = 16
#: Query tokens colpg_int8_integer_maxsim takes at a time: the query is padded to a multiple.
INTEGER_LANES = 4


def int8_kernel(dim: int) -> ctypes.CDLL | None:
    """The kernels for int8 rows of ``dim`` dimensions, unless turned off or unbuildable; else None (PyTorch)."""
    if not kernel_enabled() or dim % DIM_MULTIPLE:
        return None
    return library()


def _pointers(values: Sequence[int]) -> torch.Tensor:
    """Addresses as a C array of pointers. A tensor, not a ctypes array: each ctypes array type
    made is a cycle that only the garbage collector frees, and an array of c_char_p keeps the
    bytes it is given in a dict of its own (1.35 GB of payloads held after filling a 1 GiB row
    cache at 100k documents, until a collection)."""
    return torch.tensor(values, dtype=POINTER)


def raws(lib: ctypes.CDLL, payloads: Sequence[bytes], lengths: Sequence[int], scale: torch.Tensor) -> list[torch.Tensor]:
    """Each row's raw form: its int8 values with each token's inverse norm at ``scale`` after them.

    Shapes: payloads[i] ``lengths[i] * dim`` bytes; scale [dim] float32 -> [lengths[i], dim + 4] uint8 each.
    """
    dim = scale.shape[0]
    for number, (payload, length) in enumerate(zip(payloads, lengths, strict=True)):
        if len(payload) != length * dim:
            raise ValueError(f"row {number}: {length} tokens of {dim} int8 values are {length * dim} bytes, got {len(payload)}")
    out = [torch.empty(length, dim + 4, dtype=torch.uint8) for length in lengths]
    held = [bytes(p) for p in payloads]  # the same objects where they are bytes already, addressed in place
    counts = torch.tensor(lengths, dtype=torch.int64)
    scale = scale.float().contiguous()
    sources = _pointers([ctypes.cast(ctypes.c_char_p(p), ctypes.c_void_p).value or 0 for p in held])
    targets = _pointers([t.data_ptr() for t in out])
    lib.colpg_int8_raws(sources.data_ptr(), counts.data_ptr(), len(out), dim, scale.data_ptr(), targets.data_ptr())
    return out


def integer_kernel(lib: ctypes.CDLL) -> bool:
    """Whether ``lib`` scores int8 rows in integer arithmetic (built where the CPU has AVX2)."""
    return bool(ctypes.c_int64.in_dll(lib, "colpg_int8_integer").value)


def wide_kernel(lib: ctypes.CDLL) -> bool:
    """Whether ``lib``'s integer products take 32 dimensions a step (built where the CPU has AVX-512
    VNNI): there they beat PyTorch's int8 products too, which pay on such a CPU (bench/README.md, session 27)."""
    return bool(ctypes.c_int64.in_dll(lib, "colpg_int8_wide").value)


def maxsim_scorer(lib: ctypes.CDLL, query: torch.Tensor, integer: bool | None = None) -> Callable[[list[torch.Tensor]], list[float]]:
    """MaxSim of documents' raw int8 rows (:func:`raws`) with ``query``, already multiplied by the
    store's scales; parts of many rows on threads. ``integer`` (None: where the library has it,
    :func:`integer_kernel`): the query as colpg.scoring.Int8Query's two int8 parts in one int16,
    so the sums are its products' exactly and the scores Int8Query's to float rounding, in
    about 0.7x the float kernel's time (bench/rows.py); else in float.

    Shapes: query [q, dim] float32 on the CPU; the scorer: rows [n_i, dim + 4] uint8 -> n floats.
    """
    q, dim = query.shape
    if dim % DIM_MULTIPLE:
        raise ValueError(f"colpg's int8 kernels take dimensions in multiples of {DIM_MULTIPLE} (int8_kernel says which), got {dim}")
    width = dim + 4
    if integer if integer is not None else integer_kernel(lib):
        columns = -(-q // INTEGER_LANES) * INTEGER_LANES
        int8_query = Int8Query.of(query.float(), 2)
        combined = int8_query.parts[:, :q].to(torch.int16) * 254 + int8_query.parts[:, q:].to(torch.int16)  # [dim, q]
        tokens = padded(combined, columns, torch.int16).T.contiguous()  # [columns, dim], token-major
        step = padded(int8_query.step / 254, columns)

        def kernel(rows: int, counts: int, n: int, scores: int, shared: int, part: int, parts: int) -> None:
            best = torch.empty(columns, dtype=torch.float32)
            lib.colpg_int8_integer_maxsim(
                rows, counts, n, dim, tokens.data_ptr(), step.data_ptr(), q, columns, best.data_ptr(), scores, shared, part, parts
            )

    else:
        lanes = ctypes.c_int64.in_dll(lib, "colpg_int8_lanes").value  # query tokens kernel.c takes at a time: q is padded to a multiple
        block = ctypes.c_int64.in_dll(lib, "colpg_int8_block").value  # tokens it converts to float at once, in the work buffer
        columns = -(-q // lanes) * lanes
        prepared = padded(query.float().T, columns)  # [dim, columns]

        def kernel(rows: int, counts: int, n: int, scores: int, shared: int, part: int, parts: int) -> None:
            work = torch.empty(block * dim + columns, dtype=torch.float32)
            lib.colpg_int8_maxsim(rows, counts, n, dim, prepared.data_ptr(), q, columns, work.data_ptr(), scores, shared, part, parts)

    def score(rows: list[torch.Tensor]) -> list[float]:
        if not rows:
            return []
        lengths, addresses = [], []
        for row in rows:  # one pass (per rerank step): checked, measured and located
            shape = row.shape
            if row.dtype != torch.uint8 or len(shape) != 2 or shape[1] != width or not row.is_contiguous():
                raise ValueError(
                    f"int8 rows of {dim} values and an inverse norm, contiguous uint8 [n, {width}], were expected; got {row.dtype} {list(shape)}"
                )
            lengths.append(shape[0])
            addresses.append(row.data_ptr())
        counts = torch.tensor(lengths, dtype=torch.int64)
        scores = torch.empty(len(rows), dtype=torch.float32)
        parts = max(1, min(torch.get_num_threads(), sum(lengths) // MIN_PART_TOKENS))
        pointers = _pointers(addresses)
        shared = torch.zeros(parts, dtype=torch.int64)  # the next row and the parts' states (kernel.c)

        def part(number: int) -> None:
            kernel(pointers.data_ptr(), counts.data_ptr(), len(rows), scores.data_ptr(), shared.data_ptr(), number, parts)

        run_parts(part, parts)
        return scores.tolist()

    return score
