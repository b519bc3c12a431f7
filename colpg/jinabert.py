"""JinaBERT, the backbone of jina-colbert-v1-en, natively in PyTorch (and plain BERT with it).

A BERT encoder without position embeddings: attention scores get a symmetric ALiBi bias
``-slope_h * |i - j|`` instead, so documents can run to 8,192 tokens. Blocks are
post-LayerNorm, and the feed-forward is gated (GEGLU). Module and parameter names follow
the jina-bert-v2 checkpoints, so their state dicts load as they are.

With ``position_embedding_type="absolute"`` and ``feed_forward_type="original"`` the same
modules are BERT itself, under BERT's parameter names: BERT-backbone ColBERT checkpoints load
without importing transformers, whose BertModel import alone took 6 of a one-shot CLI
search's 13 seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colpg.errors import CheckpointError

__all__ = ["JinaBertConfig", "JinaBertModel", "alibi_bias", "alibi_slopes"]

GATED_FEED_FORWARD = {"geglu": "gelu", "reglu": "relu"}
FEED_FORWARD_TYPES = (*GATED_FEED_FORWARD, "original")
POSITION_EMBEDDING_TYPES = ("alibi", "absolute")
# Attention is computed in query chunks so that one chunk's scores stay below this many elements.
ATTENTION_CHUNK_ELEMENTS = 1 << 27


@dataclass(frozen=True)
class JinaBertConfig:
    """The sizes of a JinaBERT encoder, read from a checkpoint's config.json."""

    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    feed_forward_type: str = "geglu"
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    position_embedding_type: str = "alibi"
    max_position_embeddings: int = 512

    def __post_init__(self) -> None:
        if self.feed_forward_type not in FEED_FORWARD_TYPES:
            raise CheckpointError(
                f"config.json has feed_forward_type={self.feed_forward_type!r}; colpg implements {', '.join(FEED_FORWARD_TYPES)}"
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise CheckpointError(
                f"config.json has position_embedding_type={self.position_embedding_type!r};"
                f" colpg implements {', '.join(POSITION_EMBEDDING_TYPES)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(
                f"config.json has hidden_size={self.hidden_size}, not a multiple of num_attention_heads={self.num_attention_heads}"
            )
        if self.feed_forward_type == "original" and self.hidden_act != "gelu":
            raise CheckpointError(f"config.json has hidden_act={self.hidden_act!r}; colpg implements 'gelu'")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> JinaBertConfig:
        """Take the known fields of a config.json; the rest (auto_map, dropout, ...) does not matter here."""
        fields = {name: config[name] for name in cls.__dataclass_fields__ if name in config}
        return cls(**fields)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al.): a geometric series from ``2^(-8/n)``.

    For a head count that is not a power of two: the slopes of the nearest lower power of
    two, then every other slope of twice that count.

    >>> alibi_slopes(8).tolist()
    [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if num_heads < 1:
        raise ValueError(f"expected at least one attention head, got {num_heads}")
    lower = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(lower)
    if lower != num_heads:
        slopes += power_of_two(2 * lower)[0::2][: num_heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, length: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Symmetric ALiBi bias ``-slope_h * |i - j|``.

    Shapes:
        slopes: [heads]; returns [1, heads, length, length].
    """
    positions = torch.arange(length, device=device)
    distance = (positions[None, :] - positions[:, None]).abs().to(dtype)
    return (-slopes.to(device=device, dtype=dtype)[:, None, None] * distance).unsqueeze(0)


class JinaBertEmbeddings(nn.Module):
    """Word and token-type embeddings with LayerNorm; position embeddings only for plain BERT (ALiBi replaces them)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if hasattr(self, "position_embeddings"):
            x = x + self.position_embeddings(torch.arange(input_ids.shape[1], device=input_ids.device))
        return self.LayerNorm(x)


class JinaBertSelfAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        return x.view(batch, length, self.num_heads, hidden // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention with ``bias`` (ALiBi) plus ``key_padding`` as a float mask.

        Shapes:
            x: [batch, length, hidden]; bias: [1, heads, length, length];
            key_padding: [batch, 1, 1, length] (0 or a large negative); returns [batch, length, hidden].
        """
        batch, length, hidden = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        rows = max(1, ATTENTION_CHUNK_ELEMENTS // (batch * self.num_heads * length))
        chunks = [
            F.scaled_dot_product_attention(q[:, :, start : start + rows], k, v, attn_mask=bias[:, :, start : start + rows] + key_padding)
            for start in range(0, length, rows)
        ]
        context = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)
        return context.transpose(1, 2).reshape(batch, length, hidden)


class JinaBertSelfOutput(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class JinaBertAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.self = JinaBertSelfAttention(config)
        self.output = JinaBertSelfOutput(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias, key_padding), x)


class JinaBertGLUMLP(nn.Module):
    """Gated feed-forward: ``act(x W_g) * (x W_v)`` (one fused ``gated_layers``), then ``wo`` and post-LayerNorm."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.activation = F.gelu if GATED_FEED_FORWARD[config.feed_forward_type] == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, value = self.gated_layers(x).split(self.intermediate_size, dim=-1)
        return self.layernorm(self.wo(self.activation(gated) * value) + x)


class JinaBertDense(nn.Module):
    """A ``dense`` layer with an optional post-LayerNorm, under BERT's names (feed_forward_type "original")."""

    def __init__(self, n_in: int, n_out: int, eps: float | None) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        self.LayerNorm = nn.LayerNorm(n_out, eps=eps) if eps is not None else nn.Identity()


class JinaBertLayer(nn.Module):
    """Attention then feed-forward, each closed by ``LayerNorm(x + residual)``."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.attention = JinaBertAttention(config)
        self.mlp: JinaBertGLUMLP | None = None
        if config.feed_forward_type == "original":
            self.intermediate = JinaBertDense(config.hidden_size, config.intermediate_size, None)
            self.output = JinaBertDense(config.intermediate_size, config.hidden_size, config.layer_norm_eps)
        else:
            self.mlp = JinaBertGLUMLP(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias, key_padding)
        if self.mlp is not None:
            return self.mlp(x)
        return self.output.LayerNorm(self.output.dense(F.gelu(self.intermediate.dense(x))) + x)


class JinaBertEncoder(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))


class JinaBertModel(nn.Module):
    """The JinaBERT encoder: token ids in, one hidden vector per token out."""

    slopes: torch.Tensor

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.register_buffer("slopes", alibi_slopes(config.num_attention_heads), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Shapes: input_ids, attention_mask: [batch, length]; returns [batch, length, hidden]."""
        x = self.embeddings(input_ids, torch.zeros_like(input_ids))
        # One bias for every layer: for 8,192 tokens it is the largest tensor of the forward pass.
        # Plain BERT has none: zeros that broadcast over heads and keys, sliced by query rows.
        length = input_ids.shape[1]
        if self.config.position_embedding_type == "alibi":
            bias = alibi_bias(self.slopes, length, dtype=x.dtype, device=x.device)
        else:
            bias = torch.zeros(1, 1, length, 1, dtype=x.dtype, device=x.device)
        key_padding = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        key_padding = key_padding.masked_fill(attention_mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias, key_padding)
        return x
