"""The search worker's copy of an index's codes and packed residuals, on its device.

PLAID holds its whole compressed index in memory; colpg keeps the truth in PostgreSQL and
this cache in the worker, so candidates' residuals need not cross the wire on every query.
It can never serve stale tokens: entries are keyed by document id *and* the token row's
version (PostgreSQL's ``xmin``), which the candidate query returns in the same snapshot.
A rewritten row has a new ``xmin``, a deleted one is never a candidate again, and an id
that is not cached (or not at that version) is fetched and added. The int8 rerank store's
rows can be cached too: they are written and deleted with the token row, in the same
transaction (colpg.store.write_tokens), so the token row's version is theirs as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["TokenCache"]


class TokenCache:
    """Append-only token storage with a slot per (document id, version).

    Superseded and deleted documents keep their tokens until :meth:`clear`; ``dead_tokens``
    says how many, so an owner can reload when they dominate.
    """

    def __init__(self, residual_bytes: int, device: torch.device, capacity: int = 1 << 16, payload_dim: int = 0) -> None:
        self.device = device
        self.codes = torch.empty(capacity, dtype=torch.int32, device=device)
        self.residuals = torch.empty(capacity, residual_bytes, dtype=torch.uint8, device=device)
        #: The int8 rerank store's rows, when the owner caches them too (``payload_dim`` > 0).
        self.payload = torch.empty(capacity, payload_dim, dtype=torch.int8, device=device) if payload_dim else None
        self.size = 0
        self.dead_tokens = 0
        #: document id -> (row version, first token, token count)
        self.slots: dict[int, tuple[int, int, int]] = {}

    @property
    def bytes(self) -> int:
        """Memory held for cached tokens (live and dead)."""
        per_token = self.codes.element_size() + self.residuals.shape[1] + (0 if self.payload is None else self.payload.shape[1])
        return self.size * per_token

    def __len__(self) -> int:
        return len(self.slots)

    def clear(self) -> None:
        self.size = self.dead_tokens = 0
        self.slots.clear()

    def missing(self, ids: Sequence[int], versions: Sequence[int]) -> list[int]:
        """The ids whose tokens at the given row version are not cached."""
        slots = self.slots
        return [i for i, v in zip(ids, versions, strict=True) if (slot := slots.get(i)) is None or slot[0] != v]

    def _reserve(self, tokens: int) -> None:
        needed = self.size + tokens
        if needed <= len(self.codes):
            return
        capacity = max(needed, 2 * len(self.codes))
        codes = torch.empty(capacity, dtype=self.codes.dtype, device=self.device)
        residuals = torch.empty(capacity, self.residuals.shape[1], dtype=torch.uint8, device=self.device)
        codes[: self.size] = self.codes[: self.size]
        residuals[: self.size] = self.residuals[: self.size]
        self.codes, self.residuals = codes, residuals
        if self.payload is not None:
            payload = torch.empty(capacity, self.payload.shape[1], dtype=torch.int8, device=self.device)
            payload[: self.size] = self.payload[: self.size]
            self.payload = payload

    def add(
        self,
        ids: Sequence[int],
        versions: Sequence[int],
        lengths: Sequence[int],
        codes: torch.Tensor,
        residuals: torch.Tensor,
        payload: torch.Tensor | None = None,
    ) -> None:
        """Append documents' tokens.

        Shapes: codes [sum(lengths)]; residuals [sum(lengths), residual_bytes]; payload [sum(lengths), payload_dim]
        (given exactly when the cache holds payloads).
        """
        total = int(sum(lengths))
        if codes.shape[0] != total or residuals.shape[0] != total:
            raise ValueError(f"{total} tokens announced, {codes.shape[0]} codes and {residuals.shape[0]} residual rows given")
        if (payload is None) != (self.payload is None) or (payload is not None and payload.shape[0] != total):
            raise ValueError("payload rows must be given, one per token, exactly when the cache holds payloads")
        self._reserve(total)
        self.codes[self.size : self.size + total] = codes.to(self.device, torch.int32)
        self.residuals[self.size : self.size + total] = residuals.to(self.device)
        if self.payload is not None and payload is not None:
            self.payload[self.size : self.size + total] = payload.to(self.device, torch.int8)
        start = self.size
        for doc_id, version, length in zip(ids, versions, lengths, strict=True):
            old = self.slots.get(doc_id)
            if old is not None:
                self.dead_tokens += old[2]
            self.slots[doc_id] = (version, start, length)
            start += length
        self.size += total

    def gather(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached token positions of ``ids`` (all must be cached) and each one's token count.

        Shapes: returns ([sum of lengths] int64 positions into ``codes``/``residuals``, [len(ids)] lengths).
        """
        slots = [self.slots[i] for i in ids]
        starts = torch.tensor([s[1] for s in slots], dtype=torch.long)
        lengths = torch.tensor([s[2] for s in slots], dtype=torch.long)
        # positions = start of each token's document + its rank within the document
        offsets = torch.cumsum(lengths, 0) - lengths
        base = torch.repeat_interleave(starts - offsets, lengths)
        positions = base + torch.arange(int(lengths.sum()))
        return positions.to(self.device), lengths.to(self.device)
