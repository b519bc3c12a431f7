"""Random checkpoints in the real jina-colbert-v1-en layout, for tests and benchmarks.

The real weights cannot be downloaded on every machine; these folders have the same files
and tensor names (written out here from the jina-bert-v2 layout, not from colpg's modules),
so loading code is exercised exactly as with the real checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["jinabert_config", "jinabert_tensors", "write_jinabert_checkpoint"]


def jinabert_config(
    *,
    hidden_size: int = 768,
    num_hidden_layers: int = 12,
    num_attention_heads: int = 12,
    intermediate_size: int = 3072,
    vocab_size: int = 30528,
    feed_forward_type: str = "geglu",
) -> dict[str, Any]:
    """A config.json like jina-colbert-v1-en's (sizes default to the real model's)."""
    return {
        "architectures": ["JinaBertModel"],
        "model_type": "bert",
        "position_embedding_type": "alibi",
        "feed_forward_type": feed_forward_type,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "max_position_embeddings": 8192,
        "pad_token_id": 0,
        "auto_map": {"AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel"},
    }


def jinabert_tensors(config: dict[str, Any], *, dim: int = 128, seed: int = 0, prefix: str = "bert.") -> dict[str, torch.Tensor]:
    """Random tensors under the jina-bert-v2 names, plus a pooler (unused) and ColBERT's ``linear.weight``."""
    g = torch.Generator().manual_seed(seed)
    h, i = config["hidden_size"], config["intermediate_size"]

    def weight(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.05

    def norm(name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": 1 + weight(h), f"{name}.bias": weight(h)}

    def linear(name: str, n_out: int, n_in: int, bias: bool = True) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": weight(n_out, n_in), **({f"{name}.bias": weight(n_out)} if bias else {})}

    tensors = {
        "embeddings.word_embeddings.weight": weight(config["vocab_size"], h) * 10,
        "embeddings.token_type_embeddings.weight": weight(config["type_vocab_size"], h),
        **norm("embeddings.LayerNorm"),
    }
    for n in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{n}"
        for part in ("query", "key", "value"):
            tensors |= linear(f"{layer}.attention.self.{part}", h, h)
        tensors |= linear(f"{layer}.attention.output.dense", h, h) | norm(f"{layer}.attention.output.LayerNorm")
        if config["feed_forward_type"] == "original":
            tensors |= linear(f"{layer}.intermediate.dense", i, h)
            tensors |= linear(f"{layer}.output.dense", h, i) | norm(f"{layer}.output.LayerNorm")
        else:
            tensors |= linear(f"{layer}.mlp.gated_layers", 2 * i, h, bias=False)
            tensors |= linear(f"{layer}.mlp.wo", h, i) | norm(f"{layer}.mlp.layernorm")
    tensors |= linear("pooler.dense", h, h)
    return {prefix + name: tensor for name, tensor in tensors.items()} | {"linear.weight": weight(dim, h)}


def write_jinabert_checkpoint(
    folder: Path,
    tokenizer_json: Path,
    *,
    config: dict[str, Any] | None = None,
    dim: int = 128,
    seed: int = 0,
    weights_format: str = "safetensors",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, weights, tokenizer.json and ColBERT's artifact.metadata into ``folder``."""
    config = config or jinabert_config()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = jinabert_tensors(config, dim=dim, seed=seed)
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        save_file({name: t.contiguous() for name, t in tensors.items()}, folder / "model.safetensors")
    else:
        torch.save(tensors, folder / "pytorch_model.bin")
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    colbert = {
        "dim": dim,
        "query_maxlen": 32,
        "doc_maxlen": 8192,
        "query_token_id": "[unused0]",
        "doc_token_id": "[unused1]",
        "attend_to_mask_tokens": False,
        "similarity": "cosine",
    }
    (folder / "artifact.metadata").write_text(json.dumps(colbert | (metadata or {}), indent=2))
    return folder
