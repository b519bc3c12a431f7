"""JinaBERT: ALiBi slopes, an independent reference forward pass, symmetry, padding, long inputs, loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colpg.encoder import Encoder
from colpg.errors import CheckpointError
from colpg.jinabert import JinaBertConfig, JinaBertModel, alibi_slopes
from colpg.testing import jinabert_config, jinabert_tensors, write_jinabert_checkpoint

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 96}


@pytest.mark.parametrize(
    ("heads", "exponents"),
    [
        (8, [1, 2, 3, 4, 5, 6, 7, 8]),
        (16, [0.5 * (h + 1) for h in range(16)]),
        # 12 heads: the 8-head series, then every other slope of the 16-head series.
        (12, [1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5]),
    ],
)
def test_alibi_slopes_are_pinned(heads: int, exponents: list[float]) -> None:
    expected = torch.tensor([2.0 ** -e for e in exponents])
    torch.testing.assert_close(alibi_slopes(heads), expected, rtol=0, atol=1e-7)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def reference_forward(tensors: dict[str, torch.Tensor], config: dict[str, int], ids: list[int]) -> torch.Tensor:
    """JinaBERT for one unpadded sequence, from the formulas alone, in float64."""
    t = {name.removeprefix("bert."): value.double() for name, value in tensors.items()}
    heads, hidden, inter = config["num_attention_heads"], config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // heads
    n = len(ids)
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    # Press et al.: for 4 heads the slopes are 2^-2, 2^-4, 2^-6, 2^-8.
    slopes = [2.0 ** (-8.0 / heads * (h + 1)) for h in range(heads)]
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."

        def dense(name: str, v: torch.Tensor, p: str = p) -> torch.Tensor:
            out = v @ t[p + name + ".weight"].T
            return out + t[p + name + ".bias"] if p + name + ".bias" in t else out

        q, k, v = (dense(f"attention.self.{w}", x).view(n, heads, head_dim) for w in ("query", "key", "value"))
        scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(head_dim)
        for h in range(heads):
            for i in range(n):
                for j in range(n):
                    scores[h, i, j] -= slopes[h] * abs(i - j)
        context = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v).reshape(n, hidden)
        x = _layer_norm(dense("attention.output.dense", context) + x, t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"])
        gated = dense("mlp.gated_layers", x)
        a, b = gated[:, :inter], gated[:, inter:]
        glu = 0.5 * a * (1 + torch.erf(a / math.sqrt(2))) * b
        x = _layer_norm(dense("mlp.wo", glu) + x, t[p + "mlp.layernorm.weight"], t[p + "mlp.layernorm.bias"])
    return x


@pytest.fixture
def small() -> tuple[JinaBertModel, dict[str, torch.Tensor], dict[str, int]]:
    config = jinabert_config(vocab_size=200, **SMALL)
    tensors = jinabert_tensors(config, dim=16, seed=1)
    model = JinaBertModel(JinaBertConfig.from_dict(config))
    backbone = {k.removeprefix("bert."): v for k, v in tensors.items() if k.startswith(("bert.encoder", "bert.emb"))}
    model.load_state_dict(backbone)
    return model.eval(), tensors, config


def test_module_matches_the_reference_forward_pass(small: tuple[JinaBertModel, dict[str, torch.Tensor], dict[str, int]]) -> None:
    model, tensors, config = small
    long_ids, short_ids = list(range(5, 30)), [7, 9, 11, 13, 15, 17]
    ids = torch.zeros(2, len(long_ids), dtype=torch.long)
    ids[0] = torch.tensor(long_ids)
    ids[1, : len(short_ids)] = torch.tensor(short_ids)
    mask = (torch.arange(len(long_ids)) < torch.tensor([[len(long_ids)], [len(short_ids)]])).long()
    with torch.no_grad():
        out = model(ids, mask)
    torch.testing.assert_close(out[0].double(), reference_forward(tensors, config, long_ids), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1, : len(short_ids)].double(), reference_forward(tensors, config, short_ids), rtol=0, atol=1e-5)


def test_reversed_sequence_gives_reversed_outputs(small: tuple[JinaBertModel, dict[str, torch.Tensor], dict[str, int]]) -> None:
    """Symmetric ALiBi and no position embeddings: the model cannot tell left from right."""
    model, _, _ = small
    ids = torch.randint(1, 200, (1, 40), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        forward, backward = model(ids, mask), model(ids.flip(1), mask)
    torch.testing.assert_close(backward.flip(1), forward, rtol=0, atol=1e-5)


def test_attention_chunks_change_nothing(small: tuple[JinaBertModel, dict[str, torch.Tensor], dict[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _ = small
    ids = torch.randint(1, 200, (2, 50), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    with torch.no_grad():
        whole = model(ids, mask)
        monkeypatch.setattr("colpg.jinabert.ATTENTION_CHUNK_ELEMENTS", 2 * 4 * 50 * 7)  # 7 query rows a chunk
        chunked = model(ids, mask)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


@pytest.fixture
def jina_folder(tmp_path: Path, minilm_path: Path) -> Path:
    return write_jinabert_checkpoint(
        tmp_path / "jina", minilm_path / "tokenizer.json", config=jinabert_config(**SMALL), dim=32, seed=2
    )


def test_checkpoint_folder_loads_and_encodes(jina_folder: Path, small_texts: list[str]) -> None:
    encoder = Encoder.from_pretrained(jina_folder)
    assert isinstance(encoder.backbone, JinaBertModel)
    assert encoder.dim == 32 and encoder.settings.doc_maxlen == 8192
    docs = encoder.encode_documents(small_texts[:4])
    assert all(d.shape[1] == 32 for d in docs)
    torch.testing.assert_close(torch.cat(docs).norm(dim=-1), torch.ones(sum(len(d) for d in docs)))
    assert encoder.encode_queries(["what is alibi?"]).shape == (1, 32, 32)


def test_encoder_head_is_the_projection_of_the_reference(jina_folder: Path) -> None:
    encoder = Encoder.from_pretrained(jina_folder)
    tensors = jinabert_tensors(jinabert_config(**SMALL), dim=32, seed=2)
    ids = encoder.tokenizer.document_ids(["symmetric attention biases"])[0]
    expected = F.normalize(reference_forward(tensors, SMALL | {"vocab_size": 30528}, ids) @ tensors["linear.weight"].double().T, dim=-1)
    got = encoder.encode_documents(["symmetric attention biases"])[0]
    keep = encoder.tokenizer.documents([ids]).keep[0]
    torch.testing.assert_close(got.double(), expected[keep], rtol=0, atol=1e-5)


def test_document_alone_equals_document_batched_with_longer_ones(jina_folder: Path, small_texts: list[str]) -> None:
    encoder = Encoder.from_pretrained(jina_folder)
    short = "Short document about cells."
    alone = encoder.encode_documents([short])[0]
    batched = encoder.encode_documents([small_texts[0], short, small_texts[1]], batch_size=3)[1]
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_pytorch_bin_and_unprefixed_names_load_alike(tmp_path: Path, minilm_path: Path, jina_folder: Path) -> None:
    config = jinabert_config(**SMALL)
    folder = tmp_path / "bin"
    folder.mkdir()
    tensors = {k.removeprefix("bert."): v for k, v in jinabert_tensors(config, dim=32, seed=2).items()}
    torch.save(tensors, folder / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "artifact.metadata"):
        (folder / name).write_bytes((jina_folder / name).read_bytes())
    text = ["the same weights in another file"]
    torch.testing.assert_close(
        Encoder.from_pretrained(folder).encode_documents(text)[0], Encoder.from_pretrained(jina_folder).encode_documents(text)[0]
    )


def test_long_document_encodes_on_cpu(tmp_path: Path, minilm_path: Path) -> None:
    """8,192 tokens with 12 heads: the ALiBi bias is 12 x 8192 x 8192, built once for all layers."""
    config = jinabert_config(hidden_size=96, num_hidden_layers=2, num_attention_heads=12, intermediate_size=128)
    folder = write_jinabert_checkpoint(tmp_path / "long", minilm_path / "tokenizer.json", config=config, dim=16)
    encoder = Encoder.from_pretrained(folder, device="cpu")
    text = " ".join(["retrieval"] * 9000)
    vectors = encoder.encode_documents([text])[0]
    assert vectors.shape == (8192, 16)
    assert torch.isfinite(vectors).all()


def _rewrite(folder: Path, change: dict[str, torch.Tensor | None]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    for name, value in change.items():
        if value is None:
            tensors.pop(name)
        else:
            tensors[name] = value
    save_file(tensors, folder / "model.safetensors")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bert.encoder.layer.1.mlp.wo.bias": None}, r"missing: encoder\.layer\.1\.mlp\.wo\.bias"),
        ({"bert.encoder.layer.0.attention.self.layer_norm_q.weight": torch.ones(64)}, r"unexpected: encoder\.layer\.0\.attention\.self\.layer_norm_q\.weight"),
        ({"bert.encoder.layer.0.mlp.gated_layers.weight": torch.ones(96, 64)}, r"wrong shape: encoder\.layer\.0\.mlp\.gated_layers\.weight \(96, 64\) \(expected \(192, 64\)\)"),
        ({"linear.weight": torch.ones(32, 48)}, r"linear\.weight .* shape \(32, 48\)"),
    ],
)
def test_weights_that_do_not_fit_are_named(jina_folder: Path, change: dict[str, torch.Tensor | None], message: str) -> None:
    _rewrite(jina_folder, change)
    with pytest.raises(CheckpointError, match=message):
        Encoder.from_pretrained(jina_folder)


def test_unknown_feed_forward_type_is_refused(jina_folder: Path) -> None:
    config = json.loads((jina_folder / "config.json").read_text()) | {"feed_forward_type": "swiglu"}
    (jina_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="feed_forward_type='swiglu'; colpg implements geglu, reglu, original"):
        Encoder.from_pretrained(jina_folder)


def test_original_feed_forward_loads_under_bert_names(tmp_path: Path, minilm_path: Path) -> None:
    config = jinabert_config(**SMALL, feed_forward_type="original")
    folder = write_jinabert_checkpoint(tmp_path / "orig", minilm_path / "tokenizer.json", config=config, dim=8)
    assert Encoder.from_pretrained(folder).encode_documents(["plain feed-forward"])[0].shape[1] == 8


def test_metadata_dim_must_match_the_weights(jina_folder: Path) -> None:
    meta = json.loads((jina_folder / "artifact.metadata").read_text()) | {"dim": 128}
    (jina_folder / "artifact.metadata").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="dim=128, but the weights .* give 32"):
        Encoder.from_pretrained(jina_folder)


@pytest.mark.gpu
def test_half_precision_on_cuda_is_close_to_cpu(jina_folder: Path, small_texts: list[str]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = Encoder.from_pretrained(jina_folder, device="cpu").encode_documents(small_texts[:8])
    gpu = Encoder.from_pretrained(jina_folder, device="cuda").encode_documents(small_texts[:8])
    for a, b in zip(cpu, gpu, strict=True):
        assert F.cosine_similarity(a, b).min() > 0.99
