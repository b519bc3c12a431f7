"""The residual stage (colpg.residual_stage): whole documents scored from their resident residuals, and its walk."""

from __future__ import annotations

import math

import pytest
import torch

from colpg import kernel, native, probe
from colpg.codec import ResidualCodec, train_residual_codec
from colpg.residual_stage import STEP, WholeScorer, walk
from colpg.scoring import owners, token_maxima
from colpg.view import DocumentRows, IndexView

DOCUMENTS, DIM = 300, 64


def _view() -> tuple[ResidualCodec, IndexView, DocumentRows]:
    """A codec and a view of random documents of 1 to 20 tokens, a few of them rewritten into the delta."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 21, (DOCUMENTS,), generator=generator)
    vectors = torch.nn.functional.normalize(torch.randn(int(lengths.sum()), DIM, generator=generator), dim=1)
    codec = train_residual_codec(vectors[:2000], nbits=2, num_centroids=32, niters=4, seed=0)
    codes, packed = codec.compress(vectors)
    ids = torch.arange(DOCUMENTS) * 3 + 1
    rows = DocumentRows(ids, torch.ones(DOCUMENTS, dtype=torch.long), lengths, codes, packed, torch.rand(DOCUMENTS, generator=generator))
    view = IndexView.build(rows, 32, "1:1:", torch.device("cpu"))
    moved = DocumentRows(
        ids[:3], torch.full((3,), 2), lengths[:3], codes[: int(lengths[:3].sum())], packed[: int(lengths[:3].sum())], rows.gaps[:3]
    )
    return codec, view.apply(ids[:3].tolist(), moved, "2:2:"), rows  # the first three now in the delta, the same tokens


def _reference(codec: ResidualCodec, rows: DocumentRows, query: torch.Tensor, scores: torch.Tensor, padded: int) -> torch.Tensor:
    """Every document's whole score from its rows, document after document, in float32."""
    sims = codec.similarity(codec.query_table(query, scores, torch.float32), rows.codes, rows.residuals)
    return token_maxima(sims, owners(rows.lengths.tolist()), len(rows)).sum(dim=1) + padded * rows.gaps


@pytest.mark.parametrize("fused", [False, True])
def test_whole_scores_are_maxsim_over_every_token(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    """Documents of the main layout and of the delta alike, in PyTorch or colpg.kernel's loop."""
    if fused:
        if native.library() is None:
            pytest.skip("no C compiler here to build colpg's kernels")
        monkeypatch.setattr(kernel, "MIN_DOCUMENT_PART_TOKENS", 1)  # in parts on threads, too
    else:
        monkeypatch.setenv(native.KERNEL_ENV, "off")
    codec, view, rows = _view()
    query = torch.nn.functional.normalize(torch.randn(32, DIM, generator=torch.Generator().manual_seed(4)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    want = _reference(codec, rows, query, scores, padded=3)
    ids = [1, 4, 298 * 3 + 1, 7, 100 * 3 + 1]  # the delta's two, main's, and the delta's third
    slots = torch.tensor(view.slots_of(ids))
    got, tokens = WholeScorer(query, scores, codec, view, 3)(slots)
    positions = [(doc_id - 1) // 3 for doc_id in ids]
    assert tokens == int(rows.lengths[positions].sum())
    # colpg.kernel sums an int16 table, PyTorch a float16 one: both within a few thousandths of float32
    assert torch.allclose(got, want[positions], atol=2e-2)


def test_the_walk_scores_every_candidate_without_a_stop_and_orders_them() -> None:
    codec, view, rows = _view()
    query = torch.nn.functional.normalize(torch.randn(32, DIM, generator=torch.Generator().manual_seed(5)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    ids = (torch.arange(DOCUMENTS) * 3 + 1).tolist()
    first = sorted(torch.rand(DOCUMENTS, generator=torch.Generator().manual_seed(6)).tolist(), reverse=True)
    walked = walk(query, scores, codec, view, ids, first, 10, math.inf, 0)
    assert sorted(walked.ids) == ids and walked.scores == sorted(walked.scores, reverse=True)
    want = _reference(codec, rows, query, scores, 0)
    assert torch.allclose(torch.tensor(walked.scores), want[[(i - 1) // 3 for i in walked.ids]], atol=2e-2)
    assert walked.tokens == int(rows.lengths.sum())


def test_the_walk_stops_once_the_rest_cannot_reach_the_top_k() -> None:
    """First-stage scores far below the whole scores' k-th stop it after one step."""
    codec, view, _ = _view()
    query = torch.nn.functional.normalize(torch.randn(32, DIM, generator=torch.Generator().manual_seed(5)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    ids = (torch.arange(DOCUMENTS) * 3 + 1).tolist()
    first = [0.0] * STEP + [-1e3] * (DOCUMENTS - STEP)
    walked = walk(query, scores, codec, view, ids, first, 10, 0.0, 0)
    assert sorted(walked.ids) == ids[:STEP]
    assert walk(query, scores, codec, view, [], [], 10, 0.0, 0).ids == []
