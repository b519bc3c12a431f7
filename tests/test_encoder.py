"""The encoder on real pretrained weights (all-MiniLM-L6-v2) and the ColBERT conventions."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colpg.compat import Checkpoint
from colpg.encoder import Encoder
from colpg.errors import CheckpointError, ConfigurationError, EncodingError


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Encoder:
    return Encoder.from_pretrained(minilm_path, device="cpu")


def test_minilm_reproduces_transformers_bert_outputs(minilm: Encoder, minilm_path: Path, small_texts: list[str]) -> None:
    """A plain BERT folder: token vectors are BertModel's hidden states, normalised, for kept tokens."""
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(minilm_path).eval()
    texts = small_texts[:6]
    ours = minilm.encode_documents(texts, batch_size=4)
    for text, got in zip(texts, ours, strict=True):
        ids = minilm.tokenizer.document_ids([text])
        batch = minilm.tokenizer.documents(ids)
        with torch.no_grad():
            hidden = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state[0]
        torch.testing.assert_close(got, F.normalize(hidden, dim=-1)[batch.keep[0]], rtol=0, atol=1e-5)


def test_document_sequence_has_markers_and_no_punctuation(minilm: Encoder) -> None:
    tok = minilm.tokenizer
    ids = tok.document_ids(["Hello, world!"])[0]
    assert tok.tokens(ids) == ["[CLS]", "[unused1]", "hello", ",", "world", "!", "[SEP]"]
    assert tok.documents([ids]).keep[0].tolist() == [True, True, True, False, True, False, True]
    assert minilm.encode_documents(["Hello, world!"])[0].shape == (5, 384)


def test_query_is_padded_with_mask_tokens(minilm: Encoder) -> None:
    batch = minilm.tokenizer.queries(["what is colbert"])
    tokens = minilm.tokenizer.tokens(batch.input_ids[0].tolist())
    assert tokens[:2] == ["[CLS]", "[unused0]"] and tokens[2:4] == ["what", "is"]
    assert tokens[-1] == "[MASK]" and len(tokens) == 32
    assert batch.attention_mask[0].sum() == tokens.index("[SEP]") + 1  # mask tokens not attended by default
    queries = minilm.encode_queries(["what is colbert", "a second, longer query about late interaction"])
    assert queries.shape == (2, 32, 384)
    torch.testing.assert_close(queries.norm(dim=-1), torch.ones(2, 32))


def test_attending_to_mask_tokens_follows_settings(minilm_path: Path) -> None:
    encoder = Encoder.from_pretrained(minilm_path, {"attend_to_mask_tokens": True, "query_maxlen": 16})
    batch = encoder.tokenizer.queries(["short"])
    assert batch.attention_mask.tolist() == [[1] * 16]


def test_input_order_survives_length_sorting(minilm: Encoder, small_texts: list[str]) -> None:
    texts = [small_texts[3][:80], small_texts[0], small_texts[5][:30], small_texts[1]]
    batched = minilm.encode_documents(texts, batch_size=2)
    for text, vectors in zip(texts, batched, strict=True):
        torch.testing.assert_close(vectors, minilm.encode_documents([text])[0], rtol=0, atol=1e-5)


def test_flattened_documents_carry_lengths(minilm: Encoder) -> None:
    flat, lengths = minilm.encode_documents_flat(["one two three", "four"])
    assert lengths.tolist() == [6, 4] and flat.shape == (10, 384)  # [CLS] [D] ... [SEP]


def test_long_documents_are_truncated_with_one_warning(minilm_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = Encoder.from_pretrained(minilm_path, {"doc_maxlen": 16})
    with caplog.at_level(logging.WARNING, logger="colpg"):
        docs = encoder.encode_documents(["word " * 40, "short one", "token " * 20])
    assert [len(d) for d in docs] == [16, 5, 16]
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 document texts were longer than 16 tokens" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["fine", ""], EncodingError, "document 1 is empty"),
        (["fine", "  \n\t"], EncodingError, "document 1 is empty"),
        (["fine", "also fine", 42], TypeError, "document 2 is a int, expected str"),
        (["fine", None], TypeError, "document 1 is a NoneType"),
        ("a bare string", TypeError, "got a single str"),
    ],
)
def test_bad_documents_are_named(minilm: Encoder, texts: list[str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        minilm.encode_documents(texts)


def test_empty_query_is_refused(minilm: Encoder) -> None:
    with pytest.raises(EncodingError, match="query 0 is empty"):
        minilm.encode_queries([""])


def test_stanford_checkpoint_api(minilm_path: Path) -> None:
    checkpoint = Checkpoint(str(minilm_path), colbert_config={"query_maxlen": 24, "doc_maxlen": 8192})
    assert checkpoint.settings.doc_maxlen == 512  # capped at BERT's positions
    assert checkpoint.queryFromText(["a query"], bsize=8).shape == (1, 24, 384)
    docs = ["first document, with a comma", "second"]
    as_list = checkpoint.docFromText(docs, keep_dims=False)
    assert [d.shape[0] for d in as_list] == [9, 4]  # "com ##ma" is two tokens; the comma is skipped
    flat, lengths = checkpoint.docFromText(docs, keep_dims="flatten")
    assert lengths.tolist() == [9, 4] and flat.shape == (13, 384)
    padded, mask = checkpoint.docFromText(docs, keep_dims=True)
    assert padded.shape == (2, 9, 384) and mask.sum(1).tolist() == [9, 4]


def _colbert_folder(tmp_path: Path, minilm_path: Path, prefix: str) -> tuple[Path, torch.Tensor]:
    """A ColBERTv2-layout folder: MiniLM under ``bert.``, a seeded 128 x 384 projection, ColBERT metadata."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "colbertv2"
    folder.mkdir()
    tensors = {prefix + k: v for k, v in load_file(minilm_path / "model.safetensors").items()}
    projection = torch.randn(128, 384, generator=torch.Generator().manual_seed(0)) / 20
    save_file(tensors | {"linear.weight": projection}, folder / "model.safetensors")
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(minilm_path / name, folder / name)
    (folder / "artifact.metadata").write_text(json.dumps({"dim": 128, "query_maxlen": 40, "doc_maxlen": 180}))
    return folder, projection


def test_colbertv2_layout_projects_to_128(tmp_path: Path, minilm_path: Path, minilm: Encoder) -> None:
    folder, projection = _colbert_folder(tmp_path, minilm_path, "bert.")
    encoder = Encoder.from_pretrained(folder)
    assert encoder.dim == 128 and encoder.settings.query_maxlen == 40 and encoder.settings.doc_maxlen == 180
    text = ["late interaction over token vectors"]
    ids = minilm.tokenizer.document_ids(text)
    batch = minilm.tokenizer.documents(ids)
    with torch.inference_mode():
        hidden = minilm.backbone(batch.input_ids, batch.attention_mask)[0]
    expected = F.normalize(hidden @ projection.T, dim=-1)[batch.keep[0]]
    torch.testing.assert_close(encoder.encode_documents(text)[0], expected, rtol=0, atol=1e-5)


def test_caller_settings_override_metadata(tmp_path: Path, minilm_path: Path) -> None:
    folder, _ = _colbert_folder(tmp_path, minilm_path, "")
    assert Encoder.from_pretrained(folder, {"query_maxlen": 64}).settings.query_maxlen == 64
    with pytest.raises(ConfigurationError, match="query_maxlen must be an integer above 3, got 2"):
        Encoder.from_pretrained(folder, {"query_maxlen": 2})


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "has no config.json"),
        (lambda f: (f / "model.safetensors").unlink(), "has no weights: expected model.safetensors or pytorch_model.bin"),
        (lambda f: (f / "model.safetensors").write_bytes(b"not safetensors"), "cannot read weights from"),
        (lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer.json or vocab.txt"),
        (lambda f: (f / "config.json").write_text("{broken"), "cannot read .*config.json"),
    ],
)
def test_broken_checkpoint_folder_is_named(tmp_path: Path, minilm_path: Path, damage: object, message: str) -> None:
    folder, _ = _colbert_folder(tmp_path, minilm_path, "bert.")
    damage(folder)  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=message):
        Encoder.from_pretrained(folder)


def test_missing_folder_and_offline_hub_id_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match="checkpoint folder .*nowhere does not exist"):
        Encoder.from_pretrained(tmp_path / "nowhere")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="model 'jinaai/jina-colbert-v1-en' is not a local folder.*pass the local folder"):
        Encoder.from_pretrained("jinaai/jina-colbert-v1-en")
