"""Text to ColBERT token vectors: a backbone (JinaBERT or BERT), a linear head, L2 normalisation.

``Encoder`` is colpg's API; :class:`colpg.compat.Checkpoint` adds Stanford ColBERT's method
names over it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from colpg import model_files
from colpg.device import default_dtype, resolve_device
from colpg.errors import CheckpointError
from colpg.jinabert import JinaBertConfig, JinaBertModel
from colpg.progress import bar as progress_bar
from colpg.settings import EncoderSettings
from colpg.tokenization import ColBERTTokenizer, TokenBatch

__all__ = ["DEFAULT_BATCH_SIZE", "Encoder"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
HEAD_WEIGHT = "linear.weight"
BACKBONE_PREFIX = "bert."
# Present in many checkpoints and never used to encode: poolers, MLM heads, BERT's position-id buffer.
UNUSED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids")


def is_jinabert(config: Mapping[str, Any]) -> bool:
    """JinaBERT checkpoints say ALiBi instead of absolute positions (and name their feed-forward)."""
    return config.get("position_embedding_type") == "alibi" or "feed_forward_type" in config


def _build_backbone(folder: Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> tuple[nn.Module, int | None]:
    """The backbone with its weights, and its position limit (None for ALiBi)."""
    weights = {name.removeprefix(BACKBONE_PREFIX): t for name, t in tensors.items() if name != HEAD_WEIGHT}
    if is_jinabert(config):
        jina = JinaBertModel(JinaBertConfig.from_dict(config))
        model_files.load_weights(jina, weights, source=folder, ignored=UNUSED_PREFIXES)
        return jina, None
    bert = JinaBertModel(JinaBertConfig.from_dict(dict(config) | {"position_embedding_type": "absolute", "feed_forward_type": "original"}))
    model_files.load_weights(bert, weights, source=folder, ignored=UNUSED_PREFIXES)
    return bert, bert.config.max_position_embeddings


def _build_head(folder: Path, tensors: Mapping[str, torch.Tensor], hidden_size: int) -> nn.Module:
    """ColBERT's projection ``linear.weight`` [dim, hidden] (no bias), or identity for a plain BERT folder."""
    if HEAD_WEIGHT not in tensors:
        return nn.Identity()
    weight = tensors[HEAD_WEIGHT]
    if weight.ndim != 2 or weight.shape[1] != hidden_size:
        raise CheckpointError(
            f"{HEAD_WEIGHT} in {folder} has shape {tuple(weight.shape)}; expected [dim, {hidden_size}] for hidden size {hidden_size}"
        )
    head = nn.Linear(hidden_size, weight.shape[0], bias=False)
    head.weight.data.copy_(weight)
    return head


def _batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


class Encoder:
    """A ColBERT model: one L2-normalised vector per token for queries and documents."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        tokenizer: ColBERTTokenizer,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.backbone = backbone.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.head = head.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.settings = tokenizer.settings
        self.name = name
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        settings: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Encoder:
        """Load a checkpoint folder (or a hub id from the local cache).

        ``settings`` (query_maxlen, doc_maxlen, ...) override the checkpoint's ColBERT metadata.

        Raises:
            CheckpointError: the folder is missing, incomplete, or its weights do not fit.
        """
        folder = model_files.resolve_folder(name_or_path)
        config = model_files.read_config(folder)
        tensors = model_files.read_tensors(folder)
        backbone, max_positions = _build_backbone(folder, config, tensors)
        hidden_size = int(config.get("hidden_size", 0))
        head = _build_head(folder, tensors, hidden_size)
        dim = head.out_features if isinstance(head, nn.Linear) else hidden_size

        resolved = EncoderSettings.from_mappings(model_files.read_colbert_metadata(folder, config), settings)
        if resolved.dim is not None and resolved.dim != dim:
            raise CheckpointError(f"the ColBERT settings say dim={resolved.dim}, but the weights in {folder} give {dim}")
        resolved = resolved.replace(dim=dim)
        if max_positions is not None and resolved.doc_maxlen > max_positions:
            logger.warning("doc_maxlen %d capped at the %d positions of %s", resolved.doc_maxlen, max_positions, folder)
            resolved = resolved.replace(doc_maxlen=max_positions)
        if max_positions is not None and resolved.query_maxlen > max_positions:
            raise CheckpointError(f"query_maxlen {resolved.query_maxlen} exceeds the {max_positions} positions of {folder}")

        target = resolve_device(device)
        return cls(
            backbone,
            head,
            ColBERTTokenizer.from_folder(folder, resolved),
            name=str(name_or_path),
            device=target,
            dtype=dtype or default_dtype(target),
        )

    @property
    def dim(self) -> int:
        assert self.settings.dim is not None  # from_pretrained always sets it
        return self.settings.dim

    @torch.inference_mode()
    def _forward(self, batch: TokenBatch) -> torch.Tensor:
        """Shapes: returns [batch, length, dim], float32, L2-normalised, on the encoder's device."""
        hidden = self.backbone(batch.input_ids.to(self.device), batch.attention_mask.to(self.device))
        return F.normalize(self.head(hidden).float(), p=2, dim=-1)

    def encode_queries(self, queries: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """Shapes: returns [len(queries), query_maxlen, dim] float32 on the CPU."""
        batch = self.tokenizer.queries(queries)
        parts = [
            self._forward(TokenBatch(batch.input_ids[rows], batch.attention_mask[rows], batch.keep[rows])).cpu()
            for rows in _batches(range(len(queries)), batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty(0, self.settings.query_maxlen, self.dim)

    def padding_direction(self) -> torch.Tensor:
        """The unit mean of a query's [MASK] padding vectors, with no query text around them.

        A short query is mostly padding and its padding vectors lean the same way in every query
        (bench/README.md, table 11), so one direction stands for them: the index keeps each
        document's codec error along it (colpg.codec.ResidualCodec.padding_gaps). Shapes: returns [dim] float32 on the CPU.
        """
        batch = self.tokenizer.padding()
        vectors = self._forward(batch)[0].cpu()
        return F.normalize(vectors[batch.input_ids[0] == self.tokenizer.mask_id].mean(dim=0), dim=0)

    def encode_documents(
        self,
        documents: Sequence[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool | None = None,
        warn_truncation: bool = True,
    ) -> list[torch.Tensor]:
        """One [tokens, dim] float32 CPU tensor per document, in input order, without padding or punctuation.

        Documents are batched by length, so long ones do not pad short ones. ``progress``:
        True or False forces the bar, None shows it on a terminal for more than one batch.
        """
        sequences = self.tokenizer.document_ids(documents, warn=warn_truncation)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        results: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        batches = list(_batches(order, batch_size))
        show = len(batches) > 1 if progress is None else progress
        for rows in progress_bar(batches, show=show, desc="encoding documents", unit="batch"):
            batch = self.tokenizer.documents([sequences[i] for i in rows])
            vectors = self._forward(batch).cpu()
            for position, row in enumerate(rows):
                results[row] = vectors[position][batch.keep[position]]
        return results

    def encode_documents_flat(
        self, documents: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All documents' vectors stacked, with each document's token count.

        Shapes: returns ([sum(lengths), dim], [len(documents)]).
        """
        per_document = self.encode_documents(documents, batch_size=batch_size, progress=progress)
        lengths = torch.tensor([len(vectors) for vectors in per_document], dtype=torch.long)
        flat = torch.cat(per_document) if per_document else torch.empty(0, self.dim)
        return flat, lengths
