"""The probe's fused kernel (colpg/kernel.c) against the same stage in PyTorch, and the kernels' build and fallback (colpg.native)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from parts_support import ORDERS, parts_in_order

from colpg import kernel, native, probe
from colpg.codec import ResidualCodec, train_residual_codec
from colpg.errors import ConfigurationError
from colpg.layout import ClusterLayout

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler here to build colpg's kernels")


def _index(nbits: int, dim: int = 64, documents: int = 300) -> tuple[ResidualCodec, list[ClusterLayout], int]:
    """A codec and two layouts (a main and a delta, as colpg.view holds them) of random documents."""
    generator = torch.Generator().manual_seed(nbits)
    vectors = torch.nn.functional.normalize(torch.randn(documents * 12, dim, generator=generator), dim=1)
    codec = train_residual_codec(vectors[:2000], nbits=nbits, num_centroids=32, niters=4, seed=0)
    codes, packed = codec.compress(vectors)
    owners = torch.arange(documents).repeat_interleave(12)
    half = len(vectors) * 2 // 3
    segments = [
        ClusterLayout.build(codes[:half], packed[:half], owners[:half], 32),
        ClusterLayout.build(codes[half:], packed[half:], owners[half:], 32),
    ]
    return codec, segments, documents


@pytest.mark.parametrize(("nbits", "query_tokens"), [(2, 32), (1, 5), (4, 40)])
def test_the_kernel_finds_what_pytorch_finds(nbits: int, query_tokens: int) -> None:
    codec, segments, documents = _index(nbits)
    query = torch.nn.functional.normalize(torch.randn(query_tokens, codec.dim, generator=torch.Generator().manual_seed(7)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    plan = probe.Probe.of(scores, 6)
    cells = torch.unique(plan.cells)
    lib = native.library()
    assert lib is not None
    floor = plan.floor
    slots, summed, imputed, tokens = kernel.fused_floored(lib, codec.residual_table(query), scores, cells, segments, documents, floor, 0.02)
    want_slots, want, want_tokens = probe.best_by_document(query, codec, codec.query_table(query, scores), cells, segments)
    order = torch.argsort(slots)
    assert tokens == want_tokens
    assert torch.equal(slots[order], want_slots)
    # PyTorch sums a float16 table, the kernel a float32 one: each best differs by float16's rounding.
    assert torch.allclose(summed[order], probe.floored_sum(want, floor, 0.02), atol=5e-3 * query_tokens)
    near_floor = ((want - floor).abs() < 5e-3).any(dim=1)  # where rounding may tip a best across its floor
    assert torch.equal(imputed[order][~near_floor].long(), (want < floor).sum(dim=1)[~near_floor])
    assert imputed.sum() > 0


@pytest.mark.parametrize(("nbits", "query_tokens"), [(2, 32), (1, 5), (4, 40)])
def test_whole_documents_score_as_a_probe_of_every_cell_scores_them(monkeypatch: pytest.MonkeyPatch, nbits: int, query_tokens: int) -> None:
    """The residual stage's loop reads each document's tokens where its layout keeps them, and finds
    the same maxima, to the bit, as the probe's loop over every cell (the same table and arithmetic)."""
    codec, segments, documents = _index(nbits)
    query = torch.nn.functional.normalize(torch.randn(query_tokens, codec.dim, generator=torch.Generator().manual_seed(8)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    lib = native.library()
    assert lib is not None
    table = codec.residual_table(query)
    every = kernel.probe_maxima(lib, table, scores, torch.arange(len(codec.centroids)), segments, documents)
    want = every.merged()[torch.argsort(every.slots)]
    kernel_table = kernel.KernelTable.of(lib, table)
    bases = native.padded(scores.T.float(), kernel_table.columns)
    monkeypatch.setattr(kernel, "MIN_DOCUMENT_PART_TOKENS", 1)  # in parts on threads, too
    for layout in segments:
        slots = torch.arange(layout.first_owner, layout.first_owner + len(layout.owner_offsets) - 1).flip(0)  # any order
        best, tokens = kernel.fused_documents(lib, kernel_table, bases, layout, slots)
        assert tokens == len(layout.owners)
        assert torch.equal(best, want[slots])
    with pytest.raises(ValueError, match=r"float32 bases \[32, \d+\] were expected, got .* torch.float32 \[31, \d+\]"):
        kernel.fused_documents(lib, kernel_table, bases[1:], segments[0], torch.tensor([0]))


@pytest.mark.parametrize("order", ["pool", *ORDERS])
def test_threads_split_a_probe_without_changing_it(monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """The parts share the cells of each segment (kernel.c): on the pool, or one that starts late finding fewer, or none."""
    codec, segments, documents = _index(2)
    query = torch.nn.functional.normalize(torch.randn(32, codec.dim, generator=torch.Generator().manual_seed(3)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    plan = probe.Probe.of(scores, 12)
    cells = torch.unique(plan.cells)
    lib = native.library()
    assert lib is not None
    floor = plan.floor
    alone = kernel.fused_floored(lib, codec.residual_table(query), scores, cells, segments, documents, floor, 0.02)
    monkeypatch.setattr(kernel, "MIN_PART_TOKENS", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    if order != "pool":
        monkeypatch.setattr(kernel, "run_parts", parts_in_order(order))
    split = kernel.fused_floored(lib, codec.residual_table(query), scores, cells, segments, documents, floor, 0.02)
    assert all(torch.equal(a, b) for a, b in zip(alone[:3], split[:3], strict=True)) and alone[3] == split[3]


def test_probe_gives_the_same_candidates_with_the_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    codec, segments, documents = _index(2)
    query = torch.nn.functional.normalize(torch.randn(32, codec.dim, generator=torch.Generator().manual_seed(5)), dim=1)
    scores = probe.centroid_scores(query, codec.centroids)
    allowed = torch.ones(documents, dtype=torch.bool)
    allowed[::7] = False
    monkeypatch.setattr(kernel, "MIN_TOKENS", 0)  # this small index's probes would stay in PyTorch
    fused = probe.probe(query, scores, codec, segments, 8, allowed, 50)
    monkeypatch.setenv(native.KERNEL_ENV, "off")
    plain = probe.probe(query, scores, codec, segments, 8, allowed, 50)
    assert fused.tokens_scored == plain.tokens_scored
    assert not set(fused.slots.tolist()) & set(range(0, documents, 7))
    assert torch.allclose(fused.scores, plain.scores, atol=5e-3)
    # near-ties may swap places at float16's rounding, so the sets are compared, less the last few places
    assert len(set(fused.slots[:40].tolist()) & set(plain.slots[:45].tolist())) == 40


def test_no_compiler_means_pytorch_and_one_warning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="colpg.native"):
        assert native.library(tmp_path / "cache") is None
    assert "need a C compiler" in caplog.text
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: internal error' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="colpg.native"):
        assert native.library(tmp_path / "other") is None
    assert "could not be built" in caplog.text and "internal error" in caplog.text
    assert not list((tmp_path / "other").glob("*.so")) and not list((tmp_path / "other").glob("*.tmp"))
    hanging = tmp_path / "slow-cc"  # writes part of its output, then outlives the timeout
    hanging.write_text('#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\necho partial > "$2"\nsleep 5\n')
    hanging.chmod(0o755)
    monkeypatch.setenv("CC", str(hanging))
    monkeypatch.setattr(native, "COMPILE_TIMEOUT_S", 1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="colpg.native"):
        assert native.library(tmp_path / "slow") is None
    assert "timed out" in caplog.text
    assert not list((tmp_path / "slow").iterdir())


def test_the_kernel_takes_large_probes_on_a_cpu_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert kernel.kernel_for(kernel.MIN_TOKENS, cpu) is native.library()
    assert kernel.kernel_for(kernel.MIN_TOKENS - 1, cpu) is None  # PyTorch is as fast on small probes
    assert kernel.kernel_for(kernel.MIN_TOKENS, torch.device("cuda")) is None
    monkeypatch.setenv(native.KERNEL_ENV, "off")
    assert kernel.kernel_for(kernel.MIN_TOKENS, cpu) is None


def test_a_malformed_kernel_setting_is_an_error_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.KERNEL_ENV, "of")
    with pytest.raises(ConfigurationError, match="COLPG_KERNEL must be one of on, .*, got 'of'"):
        kernel.kernel_for(0, torch.device("cpu"))
    monkeypatch.setenv(native.KERNEL_ENV, " YES ")
    assert kernel.kernel_for(kernel.MIN_TOKENS, torch.device("cpu")) is native.library()
