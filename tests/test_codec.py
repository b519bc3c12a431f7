"""The residual codec: bit packing, buckets, and fidelity on real MiniLM token vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colpg.codec import (
    Int8Codec,
    ResidualCodec,
    assign,
    assign_batched,
    num_centroids_for,
    pack_bits,
    sample_size,
    train_residual_codec,
)
from colpg.encoder import Encoder
from colpg.scoring import maxsim_tokens, owners
from colpg.stores import COARSE_ERROR, Int8Store


def test_assign_takes_the_nearest_centroid_with_faiss_or_without(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    centroids = F.normalize(torch.randn(300, 16, generator=generator), dim=-1)
    vectors = torch.randn(1000, 16, generator=generator)
    nearest = (vectors @ centroids.T).argmax(dim=1)
    assert torch.equal(assign(vectors, centroids), nearest)  # faiss's flat search
    assert torch.equal(assign(vectors.half(), centroids), assign_batched(vectors.half().float(), centroids))
    assert assign(vectors[:0], centroids).shape == (0,)
    monkeypatch.setitem(sys.modules, "faiss", None)  # not installed: torch's product and argmax
    assert torch.equal(assign(vectors, centroids), nearest)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_packed_buckets_read_back_as_their_values(nbits: int) -> None:
    generator = torch.Generator().manual_seed(nbits)
    values = torch.randint(0, 2**nbits, (50, 384), generator=generator)
    packed = pack_bits(values, nbits)
    assert packed.shape == (50, 384 * nbits // 8) and packed.dtype == torch.uint8
    weights = torch.randn(384, 2**nbits, generator=generator)
    codec = ResidualCodec(torch.zeros(1, 384), nbits, torch.zeros(384, 2**nbits - 1), weights)
    assert torch.equal(codec.residual_values(packed), weights[torch.arange(384)[None, :], values])


def test_sizes_follow_colbertv2() -> None:
    assert num_centroids_for(80) == 128
    assert sample_size(8) == 8 and sample_size(5183) == 5183


@pytest.fixture(scope="module")
def minilm_vectors(minilm_path: Path, small_texts: list[str]) -> torch.Tensor:
    encoder = Encoder.from_pretrained(minilm_path, device="cpu")
    return torch.cat(encoder.encode_documents(small_texts))


def test_fidelity_rises_with_bits(minilm_vectors: torch.Tensor) -> None:
    """Mean cosine between original and decompressed tokens (24 SciFact abstracts, MiniLM)."""
    fidelity = {}
    for nbits in (1, 2, 4):
        codec = train_residual_codec(minilm_vectors, nbits=nbits, num_centroids=256, niters=4, seed=0)
        codes, packed = codec.compress(minilm_vectors)
        assert packed.shape == (len(minilm_vectors), 384 * nbits // 8)
        fidelity[nbits] = float((codec.decompress(codes, packed) * minilm_vectors).sum(-1).mean())
    # Measured 0.870 / 0.945 / 0.989 with 256 centroids on these 4,198 tokens.
    assert fidelity[1] > 0.86 and fidelity[2] > 0.94 and fidelity[4] > 0.985
    assert fidelity[1] < fidelity[2] < fidelity[4]


def test_int8_is_near_lossless(minilm_vectors: torch.Tensor) -> None:
    codec = Int8Codec.fit(minilm_vectors)
    assert (codec.scales > 0).all()  # MiniLM has all-zero dimensions: their scale must not be 0
    restored = codec.decompress(codec.compress(minilm_vectors))
    assert float((restored * minilm_vectors).sum(-1).min()) > 0.999


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_lookup_similarity_is_the_decompressed_product(minilm_vectors: torch.Tensor, nbits: int) -> None:
    """The probe's table lookups (a float16 table) give query · (centroid + residual) without decompressing."""
    codec = train_residual_codec(minilm_vectors, nbits=nbits, num_centroids=256, niters=4, seed=0)
    tokens = minilm_vectors[::7]
    codes, packed = codec.compress(tokens)
    query = minilm_vectors[:32]
    table = codec.query_table(query, (codec.centroids @ query.T).T)
    assert table.dtype == torch.float16
    looked_up = codec.similarity(table, codes, packed)
    product = (codec.centroids[codes] + codec.residual_values(packed)) @ query.T
    assert looked_up.dtype == torch.float32 and looked_up.shape == product.shape
    # float16 rounding of the table: 4e-4 to 6e-4 at most here (1, 2, 4 bits), far below the residuals' own error
    assert float((looked_up - product).abs().max()) < 2e-3


def test_tiny_collection_caps_centroids(minilm_vectors: torch.Tensor) -> None:
    codec = train_residual_codec(minilm_vectors[:40], nbits=2, num_centroids=128, niters=4, seed=0)
    assert codec.centroids.shape == (40, 384)


@pytest.mark.parametrize("pays", [True, False])
def test_int8_rerank_in_integers_matches_float(minilm_vectors: torch.Tensor, monkeypatch: pytest.MonkeyPatch, pays: bool) -> None:
    """The rerank's int8 products (query in two int8 parts) give the float product's MaxSim to
    within millionths per query token; the first part alone stays within COARSE_ERROR. Where
    int8 products do not pay on the CPU (colpg.device.int8_products_pay), the store scores in float."""
    monkeypatch.setattr("colpg.stores.int8_products_pay_on", lambda device: pays)
    store = Int8Store(Int8Codec.fit(minilm_vectors))
    rows = [store.raw({"payload": store.encode(doc, torch.zeros(len(doc)))[0], "ntokens": len(doc)}) for doc in torch.split(minilm_vectors, 150)]
    query = minilm_vectors[torch.randperm(len(minilm_vectors), generator=torch.Generator().manual_seed(0))[:32]]
    owner = owners([len(r) for r in rows])
    maxsim = {parts: maxsim_tokens(store.scorer(query, parts)(rows), owner, len(rows)) for parts in (0, 1, 2)}
    assert (maxsim[2] - maxsim[0]).abs().max() < 1e-4 * len(query)
    assert 0 < (maxsim[1] - maxsim[0]).abs().max() < COARSE_ERROR * len(query)
    coarse, error = store.coarse_scorer(query)
    assert torch.equal(store.scorer(query)(rows), store.scorer(query, 2 if pays else 0)(rows))
    assert error == (COARSE_ERROR * len(query) if pays else 0.0)
    assert torch.equal(coarse(rows), store.scorer(query, 1 if pays else 0)(rows))


def test_int8_rows_read_together_are_the_rows_read_alone(minilm_vectors: torch.Tensor) -> None:
    """A rerank step converts its fetched rows at once (RerankStore.raws): the same bytes as one by one,
    each row its own tensor (the row cache counts and frees them apart), the inverse norms exact."""
    store = Int8Store(Int8Codec.fit(minilm_vectors))
    records = [{"payload": store.encode(doc, torch.zeros(len(doc)))[0], "ntokens": len(doc)} for doc in torch.split(minilm_vectors, 97)]
    together = store.raws(records)
    assert store.raws([]) == []
    assert [r.shape for r in together] == [(n["ntokens"], 384 + 4) for n in records]
    assert all(torch.equal(a, store.raws([r])[0]) for a, r in zip(together, records, strict=True))
    assert len({r.untyped_storage().data_ptr() for r in together}) == len(records)
    decoded = store.decode(together[0])
    assert torch.allclose(decoded.norm(dim=1), torch.ones(len(decoded)), atol=1e-5)


def test_int8_products_pay_is_measured_once() -> None:
    """The choice is this CPU's, timed on the first call and kept for the process."""
    from colpg.device import int8_products_pay

    assert int8_products_pay() in (True, False) and int8_products_pay.cache_info().currsize == 1


@pytest.mark.parametrize("pays", [True, False])
def test_int8_centroid_scores_stay_near_the_float_ones(minilm_vectors: torch.Tensor, monkeypatch: pytest.MonkeyPatch, pays: bool) -> None:
    """The probe's centroid scores in int8 (colpg.probe.CentroidScorer, where int8 products pay)
    are within 0.01 of the float products on MiniLM's tokens, and each query token probes nearly
    the same cells; where they do not pay, the scores are the float products themselves."""
    from colpg.probe import CentroidScorer, Probe, centroid_scores

    monkeypatch.setattr("colpg.probe.int8_products_pay_on", lambda device: pays)
    codec = train_residual_codec(minilm_vectors, nbits=2, num_centroids=256, niters=4, seed=0)
    query = minilm_vectors[torch.randperm(len(minilm_vectors), generator=torch.Generator().manual_seed(1))[:32]]
    exact = centroid_scores(query, codec.centroids)
    scorer = CentroidScorer.of(codec.centroids)
    scores = scorer(query)
    assert (scorer.quantized is not None) == pays and scores.shape == exact.shape
    if not pays:
        assert torch.equal(scores, exact) and scorer.nbytes == 0
        return
    assert scorer.nbytes == 256 * (384 + 4)
    assert float((scores - exact).abs().max()) < 0.01
    cells, want = Probe.of(scores, 16).cells, Probe.of(exact, 16).cells
    shared = [len(set(a) & set(b)) / 16 for a, b in zip(cells.tolist(), want.tolist(), strict=True)]
    assert sum(shared) / len(shared) >= 0.9


def test_padding_direction_must_match_the_centroids() -> None:
    """A stored direction of the wrong size is named when the codec loads, not met as a shape error in a search."""
    with pytest.raises(ValueError, match=r"padding direction must have the centroids' 4 dimensions, got shape \[3\]"):
        ResidualCodec(torch.eye(4)[:2], 2, torch.zeros(4, 3), torch.zeros(4, 4), torch.zeros(3))
