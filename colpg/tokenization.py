"""ColBERT's tokenization conventions on top of a checkpoint's own WordPiece tokenizer.

Query: ``[CLS] [Q] tokens [SEP]`` padded with ``[MASK]`` to ``query_maxlen`` (query
augmentation); the mask tokens are attended to only if the checkpoint says so, but their
vectors are always kept. Document: ``[CLS] [D] tokens [SEP]``, truncated to ``doc_maxlen``;
padding and punctuation (the skiplist) produce no vectors.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import torch

from colpg.errors import CheckpointError, EncodingError
from colpg.settings import SPECIAL_TOKENS_PER_TEXT, EncoderSettings

__all__ = ["ColBERTTokenizer", "TokenBatch", "check_texts"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids for the model, and which positions yield output vectors.

    Shapes: input_ids, attention_mask, keep: [batch, length].
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    keep: torch.Tensor


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    """Reject what cannot be encoded, naming its position.

    Raises:
        TypeError: ``texts`` is a single string, or an item is not a string.
        EncodingError: an item is empty or only whitespace.
    """
    if isinstance(texts, str):
        raise TypeError(f"expected a list of {what}s, got a single str; wrap it in a list")
    checked = list(texts)
    for position, text in enumerate(checked):
        if not isinstance(text, str):
            raise TypeError(f"{what} {position} is a {type(text).__name__}, expected str")
        if not text.strip():
            raise EncodingError(f"{what} {position} is empty")
    return checked


def _special_id(tokenizer: tokenizers.Tokenizer, token: str, folder: Path) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise CheckpointError(f"the tokenizer in {folder} has no {token} token")
    return int(token_id)


class ColBERTTokenizer:
    """Turns texts into ColBERT query and document token batches."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, settings: EncoderSettings, folder: Path) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.cls_id = _special_id(tokenizer, "[CLS]", folder)
        self.sep_id = _special_id(tokenizer, "[SEP]", folder)
        self.mask_id = _special_id(tokenizer, "[MASK]", folder)
        self.pad_id = _special_id(tokenizer, "[PAD]", folder)
        self.query_marker_id = _special_id(tokenizer, settings.query_token_id, folder)
        self.doc_marker_id = _special_id(tokenizer, settings.doc_token_id, folder)
        self.skiplist: frozenset[int] = frozenset()
        if settings.mask_punctuation:
            encoded = tokenizer.encode_batch(list(string.punctuation), add_special_tokens=False)
            self.skiplist = frozenset(e.ids[0] for e in encoded if e.ids)

    @classmethod
    def from_folder(cls, folder: Path, settings: EncoderSettings) -> ColBERTTokenizer:
        """tokenizer.json, or a WordPiece vocab.txt (lower-cased unless tokenizer_config.json says otherwise)."""
        if (folder / "tokenizer.json").is_file():
            tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        elif (folder / "vocab.txt").is_file():
            from tokenizers.implementations.bert_wordpiece import BertWordPieceTokenizer

            lowercase = True
            if (folder / "tokenizer_config.json").is_file():
                lowercase = bool(json.loads((folder / "tokenizer_config.json").read_text()).get("do_lower_case", True))
            tokenizer = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lowercase)._tokenizer
        else:
            raise CheckpointError(f"{folder} has no tokenizer.json or vocab.txt")
        return cls(tokenizer, settings, folder)

    def _ids(self, texts: Sequence[str], maxlen: int, what: str, warn: bool = True) -> list[list[int]]:
        room = maxlen - SPECIAL_TOKENS_PER_TEXT
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        cut = sum(len(i) > room for i in ids)
        if cut and warn:
            logger.warning("%d of %d %s texts were longer than %d tokens and were truncated", cut, len(ids), what, maxlen)
        for position, token_ids in enumerate(ids):
            if not token_ids:
                raise EncodingError(f"{what} {position} has no tokens the model knows")
        return [token_ids[:room] for token_ids in ids]

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many documents are longer than doc_maxlen (for one warning over a whole build)."""
        room = self.settings.doc_maxlen - SPECIAL_TOKENS_PER_TEXT
        return sum(len(e.ids) > room for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False))

    def document_ids(self, texts: Sequence[str], *, warn: bool = True) -> list[list[int]]:
        """Each document's full sequence ``[CLS] [D] tokens [SEP]``, truncated to doc_maxlen (with a warning)."""
        texts = check_texts(texts, "document")
        return [
            [self.cls_id, self.doc_marker_id, *ids, self.sep_id] for ids in self._ids(texts, self.settings.doc_maxlen, "document", warn)
        ]

    def queries(self, texts: Sequence[str]) -> TokenBatch:
        """Queries padded with [MASK] to query_maxlen: every position yields a vector."""
        texts = check_texts(texts, "query")
        return self._queries(self._ids(texts, self.settings.query_maxlen, "query"))

    def padding(self) -> TokenBatch:
        """A query with no text: ``[CLS] [Q] [SEP]`` and the [MASK] padding (its vectors' direction,
        :meth:`colpg.encoder.Encoder.padding_direction`)."""
        return self._queries([[]])

    def _queries(self, token_ids: list[list[int]]) -> TokenBatch:
        """``[CLS] [Q] ids [SEP]`` per query, then [MASK] to query_maxlen."""
        length = self.settings.query_maxlen
        ids = torch.full((len(token_ids), length), self.mask_id, dtype=torch.long)
        mask = torch.zeros((len(token_ids), length), dtype=torch.long)
        for row, tokens in enumerate(token_ids):
            sequence = [self.cls_id, self.query_marker_id, *tokens, self.sep_id]
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        if self.settings.attend_to_mask_tokens:
            mask.fill_(1)
        return TokenBatch(ids, mask, torch.ones_like(mask, dtype=torch.bool))

    def documents(self, sequences: Sequence[Sequence[int]]) -> TokenBatch:
        """Pad full document sequences (from :meth:`document_ids`) to the longest of the batch."""
        length = max(len(sequence) for sequence in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        keep = mask.bool()
        if self.skiplist:
            keep &= ~torch.isin(ids, torch.tensor(sorted(self.skiplist)))
        return TokenBatch(ids, mask, keep)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The token strings of ``ids`` (for explanations)."""
        return [self.tokenizer.id_to_token(i) or "" for i in ids]
