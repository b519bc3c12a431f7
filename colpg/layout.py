"""Tokens cluster-major: every token of one centroid side by side, as WARP lays out its index.

Search scores, for each query token, only the tokens of its nearest centroids; with the
tokens sorted by code, a centroid's tokens are one contiguous range, found from
``offsets`` without any per-token lookup. A token's code is implicit (the range it lies
in), so a layout holds per token just its packed residual and its document's slot:
``dim*nbits/8 + 4`` bytes, what PostgreSQL stores for it. Pure tensors; where the tokens
come from is :mod:`colpg.view`'s job.

A document's tokens lie scattered over the centroids' ranges, so a layout also keeps where they
are, document after document (4 bytes a token): the residual stage scores whole candidate
documents from them (colpg.residual_stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ClusterLayout", "ranges"]


def _offsets(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Where each key's run starts once ``keys`` (each in [0, count)) are sorted. Shapes: [n] -> [count + 1] int64."""
    offsets = torch.zeros(count + 1, dtype=torch.long, device=keys.device)
    torch.cumsum(torch.bincount(keys, minlength=count), 0, out=offsets[1:])
    return offsets


def ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The positions ``start, ..., start + length - 1`` of every range, one range after another.

    Shapes: starts, lengths [n] int64 -> [sum(lengths)] int64.

    >>> ranges(torch.tensor([5, 0, 9]), torch.tensor([2, 0, 3])).tolist()
    [5, 6, 9, 10, 11]
    """
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum()) if len(lengths) else 0
    base = torch.repeat_interleave(starts - offsets, lengths, output_size=total)
    return base + torch.arange(total, device=starts.device)


@dataclass(frozen=True)
class ClusterLayout:
    """Tokens sorted by centroid code.

    Shapes: offsets [num_centroids + 1] int64 (centroid c's tokens are ``offsets[c]:offsets[c+1]``);
    residuals [n, residual_bytes] uint8; owners [n] int32, each token's document slot;
    by_owner [n] int32, the positions sorted by owner (stable); owner_offsets [span + 1] int64,
    where slot ``first_owner + i``'s positions are ``by_owner[owner_offsets[i]:owner_offsets[i+1]]``.
    """

    offsets: torch.Tensor
    residuals: torch.Tensor
    owners: torch.Tensor
    by_owner: torch.Tensor
    owner_offsets: torch.Tensor
    first_owner: int

    @classmethod
    def build(cls, codes: torch.Tensor, residuals: torch.Tensor, owners: torch.Tensor, num_centroids: int) -> ClusterLayout:
        """Sort tokens given in any order (document-major, as stored) by code; stable, so a
        document's tokens keep their order within a centroid.

        Shapes: codes [n] int; residuals [n, residual_bytes] uint8; owners [n] int.

        >>> layout = ClusterLayout.build(torch.tensor([2, 0, 2, 1]), torch.arange(4, dtype=torch.uint8)[:, None],
        ...                              torch.tensor([7, 7, 8, 8]), 3)
        >>> layout.offsets.tolist(), layout.residuals[:, 0].tolist(), layout.owners.tolist()
        ([0, 1, 2, 4], [1, 3, 0, 2], [7, 8, 7, 8])
        >>> layout.by_owner.tolist(), layout.owner_offsets.tolist(), layout.first_owner
        ([0, 2, 1, 3], [0, 2, 4], 7)
        """
        codes = codes.long()
        order = torch.argsort(codes, stable=True)
        offsets = _offsets(codes, num_centroids)
        owners = owners[order].to(torch.int32)
        if not len(owners):
            return cls.empty(num_centroids, int(residuals.shape[1]), codes.device)
        first = int(owners.min())
        local = owners.long() - first
        return cls(
            offsets,
            residuals[order],
            owners,
            torch.argsort(local, stable=True).to(torch.int32),
            _offsets(local, int(local.max()) + 1),
            first,
        )

    @classmethod
    def empty(cls, num_centroids: int, residual_bytes: int, device: torch.device) -> ClusterLayout:
        none = torch.empty(0, dtype=torch.int32, device=device)
        return cls(
            torch.zeros(num_centroids + 1, dtype=torch.long, device=device),
            torch.empty(0, residual_bytes, dtype=torch.uint8, device=device),
            none,
            none,
            torch.zeros(1, dtype=torch.long, device=device),
            0,
        )

    def __len__(self) -> int:
        return int(self.owners.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held: residuals, owners, offsets and where each document's tokens are."""
        return sum(t.numel() * t.element_size() for t in (self.offsets, self.residuals, self.owners, self.by_owner, self.owner_offsets))

    def positions(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the tokens of ``cells`` lie, and the code of each.

        Shapes: cells [c] int64 -> ([t] int64 positions, [t] int64 codes).
        """
        starts = self.offsets[cells]
        lengths = self.offsets[cells + 1] - starts
        return ranges(starts, lengths), torch.repeat_interleave(cells, lengths)

    def document_positions(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where the tokens of documents ``slots`` (slots this layout holds) lie, document after
        document, the code of each, and each document's count.

        Shapes: slots [d] int64 -> ([t] int64 positions, [t] int64 codes, [d] int64).

        >>> layout = ClusterLayout.build(torch.tensor([2, 0, 2, 1]), torch.zeros(4, 1, dtype=torch.uint8), torch.tensor([7, 7, 8, 8]), 3)
        >>> [t.tolist() for t in layout.document_positions(torch.tensor([8, 7]))]
        [[1, 3, 0, 2], [1, 2, 0, 2], [2, 2]]
        """
        local = slots.to(self.owner_offsets.device) - self.first_owner
        starts = self.owner_offsets[local]
        lengths = self.owner_offsets[local + 1] - starts
        positions = self.by_owner[ranges(starts, lengths)].long()
        return positions, torch.searchsorted(self.offsets, positions, right=True) - 1, lengths

    def residuals_at(self, positions: torch.Tensor) -> torch.Tensor:
        """The packed residuals at ``positions``, gathered as 8-byte words where the width allows:
        4x faster than row by row in bytes (0.4 against 3.6 ms for 100,000 tokens of 96 bytes, 2 CPU cores).

        Shapes: positions [t] int64 -> [t, residual_bytes] uint8.

        >>> layout = ClusterLayout.build(torch.tensor([1, 0]), torch.arange(16, dtype=torch.uint8).view(2, 8), torch.tensor([3, 4]), 2)
        >>> layout.residuals_at(torch.tensor([1, 0, 1]))[:, 0].tolist()
        [0, 8, 0]
        """
        residuals = self.residuals
        if residuals.shape[1] % 8 or residuals.storage_offset() % 8 or not residuals.is_contiguous():
            return residuals[positions]
        return residuals.view(torch.int64).index_select(0, positions).view(torch.uint8)

    def decompose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every token's code, residual and owner, for merging layouts.

        Shapes: returns ([n] int64, [n, residual_bytes] uint8, [n] int32).
        """
        counts = self.offsets[1:] - self.offsets[:-1]
        codes = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts, output_size=len(self))
        return codes, self.residuals, self.owners
