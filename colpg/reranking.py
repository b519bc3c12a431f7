"""ColBERT as a reranker: exact MaxSim over candidates that a first stage (full text, a
single-vector column, the application's own query) chose.

Two forms: :func:`rerank_ids` scores documents of an index by their stored tokens, at the rerank
store's precision (no encoding but the query's); :func:`rerank_texts` (``colpg.rerank``) scores texts that are
in no index, encoding them whole, up to the model's own position limit rather than an index's doc_maxlen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import torch

from colpg import explain as explanations
from colpg.encoder import DEFAULT_BATCH_SIZE, Encoder
from colpg.errors import ConfigurationError
from colpg.explain import TokenMatch
from colpg.params import default_params
from colpg.resources import query as sql
from colpg.results import Hit, Ranked, hits
from colpg.scoring import maxsim_flat, owners
from colpg.search import IndexSearcher
from colpg.tokenization import ColBERTTokenizer

if TYPE_CHECKING:
    from colpg.index import Index

__all__ = ["Reranked", "TextHit", "checked_k", "full_length", "rank_exactly", "rerank_ids", "rerank_texts"]

#: Times the ids are looked up again when documents changed between the lookup and the scoring.
RESOLVE_ATTEMPTS = 3
#: Tokens (rows x longest text) encoded in one forward pass: the index build's 32 texts of 512.
TEXT_BATCH_TOKENS = DEFAULT_BATCH_SIZE * 512


@dataclass(frozen=True)
class Reranked:
    """The reranked documents, best first, and the ids that could not be scored, in the order given:
    ``unknown`` ids the index does not hold; ``not_indexed`` documents without tokens (queued
    after a text change until a worker encodes them again, or failed)."""

    hits: list[Hit]
    unknown: list[str]
    not_indexed: list[str]


@dataclass(frozen=True)
class TextHit:
    """One reranked text: its position in the list given, its MaxSim score, its rank from 1."""

    position: int
    score: float
    rank: int
    explanation: list[TokenMatch] | None = None


def checked_k(k: int | None, count: int) -> int:
    """``k`` as a number of results: every candidate when None."""
    if k is None:
        return count
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigurationError(f"k must be a positive integer or None (every candidate), got {k!r}")
    return k


def rank_exactly(searcher: IndexSearcher, vectors: torch.Tensor, document_ids: Sequence[int], k: int) -> list[Ranked]:
    """The best ``k`` of ``document_ids`` by exact MaxSim over their stored tokens, in one snapshot;
    documents without tokens in it are left out. Shapes: vectors [q, dim]."""
    if not document_ids:
        return []
    params = default_params(k).replace(nrerank=max(len(document_ids), k))  # all of them scored exactly, none probed
    return searcher.rank_candidates(vectors, document_ids, k, params)


def _resolve(index: Index, external_ids: list[str]) -> tuple[dict[str, int], list[str]]:
    """Of ``external_ids`` the index holds: the document row of each with tokens, and those without."""
    with index.searcher.engine.connect() as connection:  # the searcher's pool: no new connection per call
        pg = connection.connection.driver_connection
        assert isinstance(pg, psycopg.Connection)  # the engine's driver is psycopg 3
        rows = pg.execute(sql("rerank_resolve"), {"name": index.name, "external_ids": external_ids}).fetchall()
    indexed = {external_id: document_id for external_id, document_id, has_tokens in rows if has_tokens}
    return indexed, [external_id for external_id, _, has_tokens in rows if not has_tokens]


def rerank_ids(
    index: Index,
    query: str,
    external_ids: Iterable[str],
    k: int | None = None,
    *,
    explain: bool = False,
    vectors: torch.Tensor | None = None,
) -> Reranked:
    """The best ``k`` (all when None) of the index's documents ``external_ids`` for ``query``, by
    MaxSim over their stored tokens at the rerank store's precision; see :class:`Reranked`.

    An id repeated counts once. A document replaced while it is reranked (:meth:`Index.update`
    gives it a new row) is looked up again, up to RESOLVE_ATTEMPTS times. ``vectors``: the query's
    token vectors when the caller encoded it already.
    """
    wanted = list(dict.fromkeys(str(i) for i in external_ids))
    count = checked_k(k, len(wanted))
    if not wanted:
        return Reranked([], [], [])
    searcher = index.searcher
    if vectors is None:
        vectors = index.encoder.encode_queries([query])[0]
    ranked: list[Ranked] = []
    pending, not_indexed = wanted, set[str]()
    for _ in range(RESOLVE_ATTEMPTS):
        indexed, without = _resolve(index, pending)
        not_indexed |= set(without)
        found = rank_exactly(searcher, vectors, list(indexed.values()), len(indexed))
        ranked += found
        scored = {r.document_id for r in found}
        pending = [external_id for external_id, document_id in indexed.items() if document_id not in scored]
        if not pending:
            break
    not_indexed |= set(pending)  # still changing after every attempt
    best = sorted(ranked, key=lambda r: r.score, reverse=True)[:count]
    scored_ids = {r.external_id for r in ranked}
    return Reranked(
        hits(searcher.encoder, query, vectors, best, explain),
        [i for i in wanted if i not in scored_ids and i not in not_indexed],
        [i for i in wanted if i in not_indexed and i not in scored_ids],
    )


def full_length(encoder: Encoder) -> Encoder:
    """``encoder`` keeping as many document tokens as its model has positions (sharing its weights),
    so that a text is reranked whole rather than cut at an index's doc_maxlen."""
    limit = getattr(getattr(encoder.backbone, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int) or limit == encoder.settings.doc_maxlen:
        return encoder
    tokenizer = ColBERTTokenizer(encoder.tokenizer.tokenizer, encoder.settings.replace(doc_maxlen=limit), Path(encoder.name))
    return Encoder(encoder.backbone, encoder.head, tokenizer, name=encoder.name, device=encoder.device, dtype=encoder.dtype)


def _encode_texts(encoder: Encoder, texts: list[str]) -> list[torch.Tensor]:
    """Each text's token vectors, in batches of about TEXT_BATCH_TOKENS tokens: long texts go a few at a time."""
    lengths = [len(ids) for ids in encoder.tokenizer.document_ids(texts, warn=False)]
    order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
    vectors: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    start = 0
    while start < len(order):
        rows = max(1, TEXT_BATCH_TOKENS // lengths[order[start]])  # the batch's longest text comes first
        batch = order[start : start + rows]
        encoded = encoder.encode_documents([texts[i] for i in batch], batch_size=len(batch), progress=False, warn_truncation=False)
        for position, tokens in zip(batch, encoded, strict=True):
            vectors[position] = tokens
        start += rows
    return vectors


def rerank_texts(
    query: str, texts: Sequence[str], model: Encoder | str | Path, k: int | None = None, *, explain: bool = False
) -> list[TextHit]:
    """The best ``k`` (all when None) of ``texts`` for ``query`` by MaxSim, best first, each with its position in ``texts``.

    No index: the query and the texts are encoded by ``model`` (an :class:`Encoder`, or a
    checkpoint folder, loaded on each call), texts up to the model's position limit. Scores are
    over float vectors, so they differ slightly from an index's scores of the same text.
    """
    texts = list(texts)
    count = checked_k(k, len(texts))
    if not texts:
        return []
    encoder = full_length(model if isinstance(model, Encoder) else Encoder.from_pretrained(model))
    vectors = encoder.encode_queries([query])
    tokens = _encode_texts(encoder, texts)
    scores = maxsim_flat(vectors, torch.cat(tokens), owners([len(t) for t in tokens]), len(texts))[0]
    best = scores.topk(min(count, len(texts)))
    return [
        TextHit(
            position,
            score,
            rank,
            explanations.explain(encoder, query, vectors[0], f"text {position}", texts[position], tokens[position]) if explain else None,
        )
        for rank, (score, position) in enumerate(zip(best.values.tolist(), best.indices.tolist(), strict=True), start=1)
    ]
