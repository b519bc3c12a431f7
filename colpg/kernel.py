"""The probe's fused loop (colpg_number and colpg_score in kernel.c, built by colpg.native) and its
reduction per document (colpg_floored), and the residual stage's loop over whole documents
(colpg_score_documents).

colpg.probe scores probed tokens either in PyTorch (three passes through memory: gather the
residuals, sum table rows into [tokens, q], scatter per-document maxima) or here in one pass
that keeps each token's sums in registers; bench/kernel.py measures the two side by side on a
built index. The CPU only, and only for probes of at least MIN_TOKENS tokens: below that
PyTorch is as fast.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from colpg.layout import ClusterLayout
from colpg.native import kernel_enabled, library, padded
from colpg.threads import run_parts

__all__ = ["KernelTable", "Maxima", "fused_documents", "fused_floored", "int16_table", "kernel_for", "probe_maxima"]

#: The most an int16 table's entries for one token may sum to (int16 holds 32,767).
INT16_SUM = 32_000
#: Tokens below which a probe runs on the calling thread alone: a thread's start costs more.
MIN_PART_TOKENS = 16_384
#: The same for whole documents (colpg.residual_stage), whose tokens cost more each (their rows are read
#: from scattered positions): a step of the walk (64 documents, ~10,500 tokens) took 1.83 ms in two parts
#: against 2.72 on one thread on the assembled 100k, 1.98 against 2.65 on the 10k (2 AVX2 cores,
#: bench/kernel.py, bench/README.md session 30).
MIN_DOCUMENT_PART_TOKENS = 4_096
#: Probes of fewer tokens stay in PyTorch, which is as fast there. Measured by bench/kernel.py on
#: 2 CPU cores: session 16's kernel ran at 0.92-1.05x PyTorch's speed at 20,000-52,000 tokens; with the
#: parts sharing their cells and the table's rows a fixed stride apart (session 18) it ran at 1.2-1.8x
#: PyTorch's speed at 20,503-152,495 tokens (MS MARCO, NFCorpus, SciFact), 2.4-2.6x at 100k's
#: 450,000-640,000. On AVX2 with session 28's 32-byte sums (session 31, ncells 4-32): 1.09-1.38x from
#: 4,500 to 19,866 tokens, 0.88-0.99x at 2,656-3,080. With the cell margin the defaults' probes are
#: that small on MS MARCO (10,277-18,173 tokens, p10-p90 of 43 queries) and on 47% of NFCorpus's 300
#: (ad hoc count, session 31), so the smallest size that paid sets the threshold.
MIN_TOKENS = 4_096


def kernel_for(tokens: int, device: torch.device) -> ctypes.CDLL | None:
    """The kernel where it pays for scoring ``tokens`` on ``device`` and is not turned off; else None (PyTorch)."""
    if not kernel_enabled() or device.type != "cpu" or tokens < MIN_TOKENS:  # a malformed setting is reported at every size
        return None
    return library()


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


@dataclass(frozen=True)
class KernelTable:
    """A query's residual table as kernel.c reads it: int16 blocks of its lanes of query tokens
    and their scales (:func:`int16_table`), ``columns`` wide (q padded to the lanes).

    Shapes: blocks [columns / lanes, width * 256, lanes] int16; scale [1, columns] float32.
    """

    q: int
    width: int
    columns: int
    blocks: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, lib: ctypes.CDLL, table: torch.Tensor) -> KernelTable:
        """From :meth:`ResidualCodec.residual_table`'s [width * 256, q] float table."""
        q, width = table.shape[1], table.shape[0] // 256
        lanes = ctypes.c_int64.in_dll(lib, "colpg_lanes").value  # query tokens kernel.c takes at a time: q is padded to a multiple
        columns = -(-q // lanes) * lanes
        values, scale = int16_table(table.float())
        blocks = padded(values, columns, torch.int16).view(-1, columns // lanes, lanes).transpose(0, 1).contiguous()  # kernel.c's layout
        return cls(q, width, columns, blocks, padded(scale[None], columns))


def fused_documents(
    lib: ctypes.CDLL, table: KernelTable, bases: torch.Tensor, layout: ClusterLayout, slots: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Per document ``slots`` (slots ``layout`` holds) and query token, the best similarity of the
    document's tokens (-inf where it has none), read where the layout keeps them; and the tokens
    scored: what colpg.residual_stage computes in PyTorch.

    Shapes: bases [num_centroids, columns] float32, each centroid's scores; slots [d] int64 -> [d, q].
    """
    shape = (len(layout.offsets) - 1, table.columns)
    if (layout.residuals.shape[1], layout.residuals.dtype, layout.by_owner.dtype, bases.shape, bases.dtype) != (
        table.width, torch.uint8, torch.int32, shape, torch.float32
    ):  # fmt: skip
        raise ValueError(
            f"a layout of {table.width}-byte uint8 residuals and int32 positions, and float32 bases {list(shape)} were expected,"
            f" got {layout.residuals.dtype} {list(layout.residuals.shape)}, {layout.by_owner.dtype} and {bases.dtype} {list(bases.shape)}"
        )
    local = (slots.to(torch.int64) - layout.first_owner).contiguous()
    tokens = int((layout.owner_offsets[local + 1] - layout.owner_offsets[local]).sum())
    offsets, residuals, by_owner, owner_offsets = (
        t.contiguous() for t in (layout.offsets, layout.residuals, layout.by_owner, layout.owner_offsets)
    )
    bases = bases.contiguous()
    shared = torch.zeros(_parts(tokens, MIN_DOCUMENT_PART_TOKENS), dtype=torch.int64)  # the next document and the parts' states (kernel.c)

    def score(part: int, best: torch.Tensor) -> None:
        lib.colpg_score_documents(
            table.blocks.data_ptr(), table.scale.data_ptr(), bases.data_ptr(), table.columns, table.width, offsets.data_ptr(),
            len(offsets) - 1, residuals.data_ptr(), by_owner.data_ptr(), owner_offsets.data_ptr(), local.data_ptr(), len(local),
            best.data_ptr(), shared.data_ptr(), part, len(shared),
        )  # fmt: skip

    return _merged(_maxima_in_parts(score, len(shared), len(local), table.columns))[:, : table.q], tokens


def _parts(tokens: int, least: int) -> int:
    """The parts (threads) a call over ``tokens`` tokens runs in: a thread's start costs more below ``least`` each."""
    return max(1, min(torch.get_num_threads(), tokens // least))


def _maxima_in_parts(score: Callable[[int, torch.Tensor], None], parts: int, rows: int, columns: int) -> list[torch.Tensor]:
    """``score(part, best)`` run in ``parts`` on threads, each raising its own [rows, columns] maxima from -inf."""
    bests = [torch.full((rows, columns), float("-inf")) for _ in range(parts)]
    run_parts(lambda part: score(part, bests[part]), parts)
    return bests


def _merged(bests: list[torch.Tensor]) -> torch.Tensor:
    """The parts' maxima merged into the first's."""
    best = bests[0]
    for other in bests[1:]:
        torch.maximum(best, other, out=best)
    return best


@dataclass(frozen=True)
class Maxima:
    """A probe's per-document maxima as the kernel's parts leave them: ``slots`` [m] int64, the
    documents owning a probed token, and each part's [m, columns] maxima (query tokens padded to
    the kernel's lanes; -inf where the part scored none); ``tokens`` scored."""

    slots: torch.Tensor
    bests: list[torch.Tensor]
    q: int
    tokens: int

    def merged(self) -> torch.Tensor:
        """Per document and query token, its best token's similarity. Shapes: -> [m, q]."""
        return _merged([self.bests[0].clone(), *self.bests[1:]])[:, : self.q]


def probe_maxima(
    lib: ctypes.CDLL, table: torch.Tensor, centroid_scores: torch.Tensor, cells: torch.Tensor, segments: Sequence[ClusterLayout], slots: int
) -> Maxima:
    """For every document owning a token of ``cells``, per query token, its best token's similarity, in
    the parts' maxima (colpg_number and colpg_score).

    Shapes: table [residual_bytes * 256, q] float32 (:meth:`ResidualCodec.residual_table`);
    centroid_scores [q, num_centroids]; cells [c] int64.
    """
    kernel_table = KernelTable.of(lib, table)
    q, width, columns, blocks, scale = kernel_table.q, kernel_table.width, kernel_table.columns, kernel_table.blocks, kernel_table.scale
    cells = cells.to(torch.int64).contiguous()
    cell_scores = padded(centroid_scores[:, cells].T.float(), columns)
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
    parts = _parts(tokens, MIN_PART_TOKENS)
    shared = torch.zeros(len(work), parts, dtype=torch.int64)  # per segment: the next cell and the parts' states (kernel.c)

    def score(part: int, best: torch.Tensor) -> None:
        for number, (offsets, residuals, owners, _) in enumerate(work):
            lib.colpg_score(
                blocks.data_ptr(), scale.data_ptr(), cell_scores.data_ptr(), columns, width, offsets.data_ptr(), residuals.data_ptr(),
                owners.data_ptr(), cells.data_ptr(), len(cells), local_of.data_ptr(), best.data_ptr(), shared[number].data_ptr(), part, parts,
            )  # fmt: skip

    return Maxima(numbered[:count].long(), _maxima_in_parts(score, parts, count, columns), q, tokens)


def fused_floored(
    lib: ctypes.CDLL,
    table: torch.Tensor,
    centroid_scores: torch.Tensor,
    cells: torch.Tensor,
    segments: Sequence[ClusterLayout],
    slots: int,
    floor: torch.Tensor,
    discount: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """For every document owning a token of ``cells``: its slot, its score and how many query tokens were
    imputed (colpg.probe.floored_sum of :func:`probe_maxima`, which colpg_floored reduces from the parts'
    maxima in one pass); and the tokens scored. What colpg.probe computes in PyTorch.

    Shapes: as :func:`probe_maxima`'s; floor [q] -> ([m] int64 slots, [m] float32, [m] int32, tokens).
    """
    found = probe_maxima(lib, table, centroid_scores, cells, segments, slots)
    count, columns = len(found.slots), int(found.bests[0].shape[1])
    floors = torch.full((columns,), float("-inf"))
    floors[: found.q] = floor.float()
    pointers = (ctypes.c_void_p * len(found.bests))(*(best.data_ptr() for best in found.bests))
    scores = torch.empty(count)
    imputed = torch.empty(count, dtype=torch.int32)
    lib.colpg_floored(pointers, len(found.bests), count, columns, floors.data_ptr(), discount, scores.data_ptr(), imputed.data_ptr())
    return found.slots, scores, imputed, found.tokens
