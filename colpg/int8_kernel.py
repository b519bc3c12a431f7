"""The int8 rerank store's rows in C (colpg_int8_raws and colpg_int8_maxsim in kernel.c, built by colpg.native).

Where int8 products do not pay (colpg.device.int8_products_pay: a CPU without AVX-512 VNNI),
PyTorch scores int8 rows by converting a block of tokens to float, multiplying it by the query
and scattering per-document maxima: three passes, and a fourth when the rows are read, to
compute each token's inverse norm. Here a row's tokens are converted a few at a time into a
buffer that stays in the L1 cache, their similarities with 16 query tokens stay in registers
over all dimensions, and each document keeps its maxima as it goes; rows read are copied and
their norms computed in one pass. The same float32 arithmetic as PyTorch's, summed in another
order (bench/rows.py times both). The CPU only; dimensions a multiple of 16 (MiniLM's 384, JinaBERT's 768).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

import torch

from colpg.native import kernel_enabled, library, padded
from colpg.threads import even_runs, run_parts

__all__ = ["int8_kernel", "maxsim_scorer", "raws"]

#: Tokens below which rows are scored on the calling thread alone: a thread's start costs more.
MIN_PART_TOKENS = 4_096


def int8_kernel(dim: int) -> ctypes.CDLL | None:
    """The kernels for int8 rows of ``dim`` dimensions, unless turned off or unbuildable; else None (PyTorch)."""
    if not kernel_enabled() or dim % 16:
        return None
    return library()


def _pointers(values: Sequence[int]) -> ctypes.Array[ctypes.c_void_p]:
    return (ctypes.c_void_p * len(values))(*values)


def raws(lib: ctypes.CDLL, payloads: Sequence[bytes], lengths: Sequence[int], scale: torch.Tensor) -> list[torch.Tensor]:
    """Each row's raw form: its int8 values with each token's inverse norm at ``scale`` after them.

    Shapes: payloads[i] ``lengths[i] * dim`` bytes; scale [dim] float32 -> [lengths[i], dim + 4] uint8 each.
    """
    dim = scale.shape[0]
    for number, (payload, length) in enumerate(zip(payloads, lengths, strict=True)):
        if len(payload) != length * dim:
            raise ValueError(f"row {number}: {length} tokens of {dim} int8 values are {length * dim} bytes, got {len(payload)}")
    out = [torch.empty(length, dim + 4, dtype=torch.uint8) for length in lengths]
    sources = (ctypes.c_char_p * len(payloads))(*(bytes(p) for p in payloads))
    counts = torch.tensor(lengths, dtype=torch.int64)
    scale = scale.float().contiguous()
    lib.colpg_int8_raws(
        ctypes.cast(sources, ctypes.c_void_p), counts.data_ptr(), len(out), dim, scale.data_ptr(), _pointers([t.data_ptr() for t in out])
    )
    return out


def maxsim_scorer(lib: ctypes.CDLL, query: torch.Tensor) -> Callable[[list[torch.Tensor]], list[float]]:
    """MaxSim of documents' raw int8 rows (:func:`raws`) with ``query``, already multiplied by the
    store's scales; parts of many rows on threads.

    Shapes: query [q, dim] float32 on the CPU; the scorer: rows [n_i, dim + 4] uint8 -> n floats.
    """
    q, dim = query.shape
    lanes = ctypes.c_int64.in_dll(lib, "colpg_int8_lanes").value  # query tokens kernel.c takes at a time: q is padded to a multiple
    block = ctypes.c_int64.in_dll(lib, "colpg_int8_block").value  # tokens it converts to float at once, in the work buffer
    columns = -(-q // lanes) * lanes
    prepared = padded(query.float().T, columns)  # [dim, columns]

    def score(rows: list[torch.Tensor]) -> list[float]:
        if not rows:
            return []
        for row in rows:
            if row.dtype != torch.uint8 or row.dim() != 2 or row.shape[1] != dim + 4 or not row.is_contiguous():
                raise ValueError(
                    f"int8 rows of {dim} values and an inverse norm, contiguous uint8 [n, {dim + 4}], were expected; got {row.dtype} {list(row.shape)}"
                )
        lengths = [row.shape[0] for row in rows]
        counts = torch.tensor(lengths, dtype=torch.int64)
        scores = torch.empty(len(rows), dtype=torch.float32)
        parts = even_runs(lengths, max(1, min(torch.get_num_threads(), sum(lengths) // MIN_PART_TOKENS)))
        pointers = _pointers([row.data_ptr() for row in rows])
        base = ctypes.cast(pointers, ctypes.c_void_p).value or 0
        size = ctypes.sizeof(ctypes.c_void_p)

        def part(number: int) -> None:
            lo, hi = parts[number]
            work = torch.empty(block * dim + columns, dtype=torch.float32)
            lib.colpg_int8_maxsim(
                base + lo * size,
                counts[lo:].data_ptr(),
                hi - lo,
                dim,
                prepared.data_ptr(),
                q,
                columns,
                work.data_ptr(),
                scores[lo:].data_ptr(),
            )

        run_parts(part, len(parts))
        return scores.tolist()

    return score
