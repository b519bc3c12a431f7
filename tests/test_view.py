"""The resident view (colpg.view, colpg.layout): cluster-major layouts that follow changes exactly."""

from __future__ import annotations

import pytest
import torch

from colpg import view as view_module
from colpg.layout import ClusterLayout
from colpg.view import DocumentRows, IndexView

CENTROIDS, WIDTH = 16, 4


def _rows(ids: list[int], version: int, generator: torch.Generator) -> DocumentRows:
    lengths = torch.randint(1, 6, (len(ids),), generator=generator)
    n = int(lengths.sum())
    return DocumentRows(
        torch.tensor(ids, dtype=torch.long), torch.full((len(ids),), version), lengths,
        torch.randint(0, CENTROIDS, (n,), generator=generator), torch.randint(0, 256, (n, WIDTH), dtype=torch.uint8, generator=generator),
        torch.rand(len(ids), generator=generator),
    )


def _by_document(rows: DocumentRows) -> dict[int, list[tuple[int, tuple[int, ...]]]]:
    out, start = {}, 0
    for doc_id, length in zip(rows.ids.tolist(), rows.lengths.tolist(), strict=True):
        codes = rows.codes[start : start + length].tolist()
        out[doc_id] = sorted(zip(codes, map(tuple, rows.residuals[start : start + length].tolist()), strict=True))
        start += length
    return out


def _held(view: IndexView) -> dict[int, list[tuple[int, tuple[int, ...]]]]:
    """What the view's layouts hold of live documents, by document id."""
    out: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for layout in view.segments:
        codes, residuals, owners = layout.decompose()
        for code, residual, slot in zip(codes.tolist(), residuals.tolist(), owners.tolist(), strict=True):
            if view.alive[slot]:
                out.setdefault(int(view.ids[slot]), []).append((code, tuple(residual)))
    return {doc_id: sorted(tokens) for doc_id, tokens in out.items()}


def test_layout_ranges_hold_each_centroids_tokens() -> None:
    generator = torch.Generator().manual_seed(1)
    rows = _rows(list(range(10)), 1, generator)
    layout = ClusterLayout.build(rows.codes, rows.residuals, rows.owners(torch.arange(10)), CENTROIDS)
    _, codes = layout.positions(torch.tensor([3, 7]))
    assert sorted(codes.tolist()) == sorted(c for c in rows.codes.tolist() if c in (3, 7))
    assert layout.nbytes == (CENTROIDS + 1) * 8 + len(rows.codes) * (WIDTH + 4 + 4) + (10 + 1) * 8


def _whole(view: IndexView, slots: list[int]) -> dict[int, list[tuple[int, tuple[int, ...]]]]:
    """The tokens of documents ``slots`` found by document (IndexView.holders, ClusterLayout.document_positions), by document id."""
    out: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    wanted = torch.tensor(slots, dtype=torch.long)
    for layout, mask in view.holders(wanted):
        positions, codes, lengths = layout.document_positions(wanted[mask])
        assert torch.equal(layout.owners[positions].long(), wanted[mask].repeat_interleave(lengths))  # document after document
        for code, residual, slot in zip(codes.tolist(), layout.residuals[positions].tolist(), layout.owners[positions].tolist(), strict=True):
            out.setdefault(int(view.ids[slot]), []).append((code, tuple(residual)))
    return {doc_id: sorted(tokens) for doc_id, tokens in out.items()}


@pytest.mark.parametrize("merge_at", [8, 1 << 20])
def test_view_follows_adds_updates_and_deletes(monkeypatch: pytest.MonkeyPatch, merge_at: int) -> None:
    """Random changes applied one batch at a time hold exactly what the rows say, merged or not."""
    monkeypatch.setattr(view_module, "MERGE_MIN_TOKENS", merge_at)
    generator = torch.Generator().manual_seed(0)
    base = _rows([5, 3, 9, 1], 1, generator)
    view = IndexView.build(base, CENTROIDS, "1:1:", torch.device("cpu"))
    truth = _by_document(base)
    gaps = dict(zip(base.ids.tolist(), base.gaps.tolist(), strict=True))
    assert _held(view) == truth
    for step in range(40):
        changed = sorted(set(torch.randint(0, 20, (3,), generator=generator).tolist()))
        present = [i for i in changed if torch.rand((), generator=generator) > 0.3]  # the others are deleted
        rows = _rows(present, step + 10, generator)
        view = view.apply(changed, rows, f"{step}:{step}:")
        for doc_id in changed:
            truth.pop(doc_id, None)
        truth.update(_by_document(rows))
        gaps.update(zip(rows.ids.tolist(), rows.gaps.tolist(), strict=True))
        assert _held(view) == truth, step
        assert _whole(view, [slot for slot in view.slots_of(list(truth)) if slot is not None]) == truth, step  # main's and the delta's
        slots = view.slots_of(list(truth))
        assert [view.gaps[slot].item() for slot in slots if slot is not None] == [gaps[doc_id] for doc_id in truth], step
        assert view.apply(present, rows, "again") .documents == len(truth)  # rows it holds already change nothing
        assert view.versions_of(present) == [step + 10] * len(present)
    assert view.documents == len(truth)
    if merge_at == 8:
        assert len(view.delta) < 64  # merged along the way
