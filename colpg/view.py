"""What the search process keeps of an index: every token's residual, cluster-major, and each document's version.

PostgreSQL stays the source of truth. A view is built from the token rows of one snapshot
and then moved forward by the rows that changed since (colpg.resident reads them): a
changed document's old slot dies and its new tokens join a small ``delta`` layout; when
the delta or the dead tokens grow past a share of the whole, everything is merged into a
new ``main`` layout. Views are immutable: :meth:`IndexView.apply` returns a new one that
shares what did not change, so searches score a view without any lock.

Slots number documents: ``main``'s slots are sorted by document id (found by binary
search), the delta's follow them (found in a small dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from colpg.layout import ClusterLayout

__all__ = ["DocumentRows", "IndexView"]

#: The delta is merged into main when it holds more than this share of main's tokens (or MERGE_MIN_TOKENS).
MERGE_SHARE = 0.1
MERGE_MIN_TOKENS = 1 << 16


@dataclass(frozen=True)
class DocumentRows:
    """Documents' tokens as PostgreSQL stores them: document after document.

    Shapes: ids, versions, lengths [d] int64; codes [sum(lengths)] int64; residuals [sum(lengths), residual_bytes] uint8;
    gaps [d] float32 (colpg.codec.ResidualCodec.padding_gaps).
    """

    ids: torch.Tensor
    versions: torch.Tensor
    lengths: torch.Tensor
    codes: torch.Tensor
    residuals: torch.Tensor
    gaps: torch.Tensor

    @classmethod
    def concat(cls, parts: list[DocumentRows], residual_bytes: int) -> DocumentRows:
        if not parts:
            empty = torch.empty(0, dtype=torch.long)
            return cls(empty, empty, empty, empty, torch.empty(0, residual_bytes, dtype=torch.uint8), torch.empty(0))
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in ("ids", "versions", "lengths", "codes", "residuals", "gaps")))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def owners(self, slots: torch.Tensor) -> torch.Tensor:
        """Each token's slot, given each document's. Shapes: slots [d] -> [sum(lengths)]."""
        return torch.repeat_interleave(slots, self.lengths, output_size=int(self.codes.shape[0]))


@dataclass(frozen=True)
class IndexView:
    """An index's resident tokens at one snapshot (``watermark``, PostgreSQL's ``pg_snapshot`` text).

    Shapes: main_ids [s_main] int64 sorted; ids, versions, lengths [s] int64, gaps [s] float32 (on the
    layouts' device) and alive [s] bool per slot.
    """

    main: ClusterLayout
    delta: ClusterLayout
    main_ids: torch.Tensor
    delta_slots: dict[int, int]
    delta_rows: DocumentRows
    ids: torch.Tensor
    versions: torch.Tensor
    lengths: torch.Tensor
    gaps: torch.Tensor
    alive: torch.Tensor
    watermark: str
    num_centroids: int

    @classmethod
    def build(cls, rows: DocumentRows, num_centroids: int, watermark: str, device: torch.device) -> IndexView:
        """A view holding ``rows`` in main (one slot per document, by ascending id)."""
        order = torch.argsort(rows.ids)
        slots = torch.empty_like(order)
        slots[order] = torch.arange(len(order))
        main = ClusterLayout.build(rows.codes.to(device), rows.residuals.to(device), rows.owners(slots).to(device), num_centroids)
        residual_bytes = int(rows.residuals.shape[1])
        return cls(
            main=main,
            delta=ClusterLayout.empty(num_centroids, residual_bytes, device),
            main_ids=rows.ids[order],
            delta_slots={},
            delta_rows=DocumentRows.concat([], residual_bytes),
            ids=rows.ids[order],
            versions=rows.versions[order],
            lengths=rows.lengths[order],
            gaps=rows.gaps[order].to(device),
            alive=torch.ones(len(order), dtype=torch.bool, device=device),
            watermark=watermark,
            num_centroids=num_centroids,
        )

    @property
    def segments(self) -> tuple[ClusterLayout, ...]:
        return (self.main, self.delta) if len(self.delta) else (self.main,)

    @property
    def tokens(self) -> int:
        """Tokens held, those of deleted or replaced documents included until the next merge."""
        return len(self.main) + len(self.delta)

    @property
    def documents(self) -> int:
        """Live documents."""
        return int(self.alive.sum())

    @property
    def nbytes(self) -> int:
        """Memory held: both layouts, the delta's stored rows and the per-slot tables."""
        per_slot = sum(t.numel() * t.element_size() for t in (self.ids, self.versions, self.lengths, self.gaps, self.alive, self.main_ids))
        delta_rows = self.delta_rows.codes.numel() * 8 + self.delta_rows.residuals.numel()
        return self.main.nbytes + self.delta.nbytes + per_slot + delta_rows

    def slots_of(self, ids: list[int]) -> list[int | None]:
        """The live slot of each document id, or None where the view does not hold it (vectorized:
        a search of ``among`` thousands of documents looks them all up)."""
        if not ids:
            return []
        wanted = torch.tensor(ids, dtype=torch.long)
        alive = self.alive.cpu()
        slots = torch.full_like(wanted, -1)
        if len(self.main_ids):
            found = torch.searchsorted(self.main_ids, wanted).clamp(max=len(self.main_ids) - 1)
            slots = torch.where((self.main_ids[found] == wanted) & alive[found], found, slots)
        out: list[int | None] = [None if slot < 0 else slot for slot in slots.tolist()]
        if self.delta_slots:
            for n, slot in enumerate(out):
                if slot is None and (delta := self.delta_slots.get(ids[n])) is not None and bool(alive[delta]):
                    out[n] = delta
        return out

    def holders(self, slots: torch.Tensor) -> list[tuple[ClusterLayout, torch.Tensor]]:
        """The layouts holding documents ``slots`` (live or not), each with a mask of the slots it
        holds: main the slots below its documents' count, the delta the rest. Shapes: slots [d] int64."""
        in_main = slots < len(self.main_ids)
        return [(layout, mask) for layout, mask in ((self.main, in_main), (self.delta, ~in_main)) if bool(mask.any())]

    def versions_of(self, ids: list[int]) -> list[int | None]:
        """The version the view holds of each document id, or None."""
        slots = self.slots_of(ids)
        held = iter(self.versions[[slot for slot in slots if slot is not None]].tolist())
        return [None if slot is None else next(held) for slot in slots]

    def apply(self, changed: list[int], rows: DocumentRows, watermark: str) -> IndexView:
        """The view after documents ``changed``: each one's current ``rows`` (absent: deleted).

        A row at the version the view holds already changes nothing (the view was built after it).
        """
        slots = self.slots_of(changed)
        position = {doc_id: i for i, doc_id in enumerate(rows.ids.tolist())}
        alive = self.alive.clone()
        keep = torch.ones(len(rows), dtype=torch.bool)
        for doc_id, slot in zip(changed, slots, strict=True):
            if slot is None:
                continue
            row = position.get(doc_id)
            if row is not None and int(rows.versions[row]) == int(self.versions[slot]):
                keep[row] = False  # the view holds this version already
            else:
                alive[slot] = False
        token_kept = torch.repeat_interleave(keep, rows.lengths, output_size=int(rows.codes.shape[0]))
        new = DocumentRows(
            rows.ids[keep], rows.versions[keep], rows.lengths[keep], rows.codes[token_kept], rows.residuals[token_kept], rows.gaps[keep]
        )
        first = len(self.ids)
        new_slots = torch.arange(first, first + len(new))
        delta_slots = dict(self.delta_slots) | dict(zip(new.ids.tolist(), new_slots.tolist(), strict=True))
        # The delta's stored rows carry each token's slot in place of its document id.
        delta_rows = DocumentRows.concat(
            [self.delta_rows, DocumentRows(new_slots, new.versions, new.lengths, new.codes, new.residuals, new.gaps)],
            int(self.main.residuals.shape[1]),
        )
        device = self.alive.device
        view = IndexView(
            main=self.main,
            delta=self.delta,
            main_ids=self.main_ids,
            delta_slots=delta_slots,
            delta_rows=delta_rows,
            ids=torch.cat([self.ids, new.ids]),
            versions=torch.cat([self.versions, new.versions]),
            lengths=torch.cat([self.lengths, new.lengths]),
            gaps=torch.cat([self.gaps, new.gaps.to(device)]),
            alive=torch.cat([alive, torch.ones(len(new), dtype=torch.bool, device=device)]),
            watermark=watermark,
            num_centroids=self.num_centroids,
        )
        if view._needs_merge():
            return view.merged()
        if len(new):
            delta = ClusterLayout.build(
                delta_rows.codes.to(device),
                delta_rows.residuals.to(device),
                delta_rows.owners(delta_rows.ids).to(device),
                self.num_centroids,
            )
            view = IndexView(**{**view.__dict__, "delta": delta})
        return view

    def _needs_merge(self) -> bool:
        dead = int(self.lengths[~self.alive.cpu()].sum())
        budget = max(MERGE_MIN_TOKENS, int(MERGE_SHARE * len(self.main)))
        return len(self.delta_rows.codes) > budget or dead > budget

    def merged(self) -> IndexView:
        """Everything live in one main layout, slots renumbered by document id."""
        codes, residuals, owners = self.main.decompose()
        live = self.alive[owners.long()]
        delta_owners = self.delta_rows.owners(self.delta_rows.ids).to(owners.device)
        delta_live = self.alive[delta_owners]
        alive_slots = torch.nonzero(self.alive.cpu()).flatten()
        order = alive_slots[torch.argsort(self.ids[alive_slots])]
        renumber = torch.full((len(self.ids),), -1, dtype=torch.long)
        renumber[order] = torch.arange(len(order))
        renumber = renumber.to(owners.device)
        main = ClusterLayout.build(
            torch.cat([codes[live], self.delta_rows.codes.to(owners.device)[delta_live]]),
            torch.cat([residuals[live], self.delta_rows.residuals.to(owners.device)[delta_live]]),
            torch.cat([renumber[owners[live].long()], renumber[delta_owners[delta_live]]]),
            self.num_centroids,
        )
        residual_bytes = int(self.main.residuals.shape[1])
        return IndexView(
            main=main,
            delta=ClusterLayout.empty(self.num_centroids, residual_bytes, owners.device),
            main_ids=self.ids[order],
            delta_slots={},
            delta_rows=DocumentRows.concat([], residual_bytes),
            ids=self.ids[order],
            versions=self.versions[order],
            lengths=self.lengths[order],
            gaps=self.gaps[order.to(self.gaps.device)],
            alive=torch.ones(len(order), dtype=torch.bool, device=owners.device),
            watermark=self.watermark,
            num_centroids=self.num_centroids,
        )
