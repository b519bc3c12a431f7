"""An index's rows in PostgreSQL: codec in, documents with codes and residuals out, by COPY.

Every statement comes from ``sql/queries``; every value is a bound parameter or a COPY row.
Functions take an open psycopg connection and leave transaction control to the caller,
so a batch of documents commits whole or not at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import torch
from pgvector import Vector
from psycopg.types.json import Jsonb

from colpg.codec import ResidualCodec
from colpg.collection import CollectionDocument
from colpg.errors import IndexNotFound, SchemaError
from colpg.resources import query
from colpg.stores import RerankStore, store_for

__all__ = [
    "IndexRecord",
    "create_index",
    "delete_documents",
    "drop_index",
    "existing_ids",
    "finish_build",
    "get_index",
    "load_codec",
    "trim_changes",
    "write_compressed_documents",
    "write_documents",
]

#: Rows of an index's token-change log kept when it is trimmed (searchers further behind reload).
CHANGES_KEPT = 10_000


@dataclass(frozen=True)
class IndexRecord:
    """An index row as stored."""

    id: int
    name: str
    model: str
    dim: int
    nbits: int
    config: dict[str, Any]
    status: str
    bucket_cutoffs: list[float] | None
    bucket_weights: list[float] | None
    rerank_codec: dict[str, Any] | None
    padding: list[float] | None
    updated_at: dt.datetime

    @property
    def precision(self) -> str:
        return str(self.config.get("precision", "none"))


def get_index(conn: psycopg.Connection[Any], name: str) -> IndexRecord:
    row = conn.execute(query("index_get"), {"name": name}).fetchone()
    if row is None:
        raise IndexNotFound(f"no index named {name!r}; `colpg index list` shows the indexes")
    return IndexRecord(*row)


def find_index(conn: psycopg.Connection[Any], name: str) -> IndexRecord | None:
    try:
        return get_index(conn, name)
    except IndexNotFound:
        return None


def create_index(
    conn: psycopg.Connection[Any],
    *,
    name: str,
    model: str,
    config: dict[str, Any],
    codec: ResidualCodec,
    rerank: RerankStore,
) -> int:
    """Insert the index row and its centroids (in the caller's transaction)."""
    rerank_params = rerank.params()
    row = conn.execute(
        query("index_create"),
        {
            "name": name,
            "model": model,
            "dim": codec.dim,
            "nbits": codec.nbits,
            "config": Jsonb(config),
            "bucket_cutoffs": codec.cutoffs.flatten().tolist(),
            "bucket_weights": codec.weights.flatten().tolist(),
            "rerank_codec": Jsonb(rerank_params) if rerank_params is not None else None,
            "padding": None if codec.padding is None else codec.padding.tolist(),
        },
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING
    index_id = int(row[0])
    with conn.cursor().copy(query("centroids_copy_in")) as copy:
        copy.set_types(["int4", "int4", "vector"])
        for code, centroid in enumerate(codec.centroids.cpu().numpy()):
            copy.write_row((index_id, code, Vector(centroid)))
    return index_id


def load_codec(
    conn: psycopg.Connection[Any], record: IndexRecord, device: torch.device | None = None, *, half: bool = False
) -> tuple[ResidualCodec, RerankStore]:
    """The index's residual codec (centroids read by binary COPY) and its rerank store, on ``device``;
    with ``half``, the centroids held in float16 (:meth:`ResidualCodec.half`: a search process's)."""
    with conn.cursor().copy(query("centroids_copy_out"), {"index_id": record.id}) as copy:
        copy.set_types(["vector"])
        centroids = np.stack([row[0].to_numpy() for row in copy.rows()])
    if record.bucket_cutoffs is None or record.bucket_weights is None:
        raise SchemaError(f"index {record.name!r} has no trained codec; rebuild it with overwrite=True (--overwrite)")
    options = 2**record.nbits
    codec = ResidualCodec(
        torch.from_numpy(centroids),
        record.nbits,
        torch.tensor(record.bucket_cutoffs, dtype=torch.float32).view(record.dim, options - 1),
        torch.tensor(record.bucket_weights, dtype=torch.float32).view(record.dim, options),
        None if record.padding is None else torch.tensor(record.padding, dtype=torch.float32),
    )
    if device is not None:
        codec = codec.to(device)
    if half:
        codec = codec.half()
    return codec, store_for(record.rerank_codec, codec)


def existing_ids(conn: psycopg.Connection[Any], index_id: int, external_ids: Sequence[str] | None = None) -> set[str]:
    """The external ids (all, or those among ``external_ids``) that the index already holds."""
    if external_ids is None:
        rows = conn.execute(query("documents_all_ids"), {"index_id": index_id}).fetchall()
    else:
        rows = conn.execute(query("documents_existing"), {"index_id": index_id, "external_ids": list(external_ids)}).fetchall()
    return {row[0] for row in rows}


def write_documents(
    conn: psycopg.Connection[Any],
    index_id: int,
    documents: Sequence[CollectionDocument],
    vectors: Sequence[torch.Tensor],
    codec: ResidualCodec,
    rerank: RerankStore,
    *,
    with_text: bool = True,
) -> None:
    """COPY a batch of new documents, ready, with their tokens (rows in documents, document_tokens, rerank_vectors).

    ``with_text`` False stores NULL texts (documents built from precomputed vectors have none).

    Shapes: vectors[i] is [tokens_i, dim] float32.
    """
    if documents:
        write_tokens(conn, index_id, _copy_documents(conn, index_id, documents, with_text=with_text), vectors, codec, rerank)


def write_compressed_documents(
    conn: psycopg.Connection[Any],
    index_id: int,
    documents: Sequence[CollectionDocument],
    codes: Sequence[torch.Tensor],
    packed: Sequence[torch.Tensor],
    codec: ResidualCodec,
    rerank: RerankStore,
) -> None:
    """COPY new documents whose tokens come compressed already (an imported ColBERT index), ready.

    A rerank store that keeps rows gets the tokens as ``codec`` decompresses them.

    Shapes: codes[i] [tokens_i] int; packed[i] [tokens_i, dim*nbits/8] uint8, in :func:`colpg.codec.pack_bits` order.
    """
    if not documents:
        return
    ids = _copy_documents(conn, index_id, documents)
    _copy_tokens(conn, index_id, ids, codes, packed, torch.zeros(len(ids)))  # no gaps: the tokens are known at nbits only
    if rerank.keeps_rows:
        _copy_rerank(conn, ids, [codec.decompress(c, p) for c, p in zip(codes, packed, strict=True)], codes, rerank)


def _copy_documents(
    conn: psycopg.Connection[Any], index_id: int, documents: Sequence[CollectionDocument], *, with_text: bool = True
) -> list[int]:
    """COPY document rows, ready (texts NULL unless ``with_text``); their new ids, in order."""
    ids = [row[0] for row in conn.execute(query("documents_reserve_ids"), {"count": len(documents)}).fetchall()]
    with conn.cursor().copy(query("documents_copy_in")) as copy:
        copy.set_types(["int8", "int4", "text", "text", "jsonb", "text"])
        for doc_id, document in zip(ids, documents, strict=True):
            text = document.text if with_text else None
            copy.write_row((doc_id, index_id, document.external_id, text, Jsonb(document.metadata), "ready"))
    return ids


def write_tokens(
    conn: psycopg.Connection[Any],
    index_id: int,
    ids: Sequence[int],
    vectors: Sequence[torch.Tensor],
    codec: ResidualCodec,
    rerank: RerankStore,
) -> None:
    """Compress and COPY the tokens of documents that have none (rows in document_tokens, rerank_vectors).

    Shapes: vectors[i] is [tokens_i, dim] float32.
    """
    lengths = [len(v) for v in vectors]
    tokens = torch.cat(list(vectors)).to(codec.centroids.device)
    codes, packed = codec.compress(tokens)
    per_doc_codes = torch.split(codes, lengths)
    gaps = codec.padding_gaps(tokens, codes, packed, lengths)
    _copy_tokens(conn, index_id, ids, per_doc_codes, torch.split(packed.cpu(), lengths), gaps)  # one device transfer
    if rerank.keeps_rows:
        _copy_rerank(conn, ids, vectors, per_doc_codes, rerank)


def _copy_tokens(
    conn: psycopg.Connection[Any],
    index_id: int,
    ids: Sequence[int],
    codes: Sequence[torch.Tensor],
    packed: Sequence[torch.Tensor],
    gaps: torch.Tensor,
) -> None:
    """COPY each document's codes, packed residuals and padding gap (colpg.codec.ResidualCodec.padding_gaps) into document_tokens."""
    with conn.cursor().copy(query("document_tokens_copy_in")) as copy:
        copy.set_types(["int8", "int4", "int4", "int4[]", "bytea", "float4"])
        for doc_id, doc_codes, doc_packed, gap in zip(ids, codes, packed, gaps.tolist(), strict=True):
            copy.write_row((doc_id, index_id, len(doc_codes), doc_codes.cpu().tolist(), doc_packed.cpu().numpy().tobytes(), gap))


def _copy_rerank(
    conn: psycopg.Connection[Any], ids: Sequence[int], vectors: Sequence[torch.Tensor], codes: Sequence[torch.Tensor], rerank: RerankStore
) -> None:
    """COPY each document's rerank-store row. Shapes: vectors[i] [tokens_i, dim]; codes[i] [tokens_i]."""
    device = codes[0].device if codes else torch.device("cpu")
    with conn.cursor().copy(query("rerank_vectors_copy_in")) as copy:
        copy.set_types(["int8", "bytea", "halfvec[]"])
        for doc_id, doc_vectors, doc_codes in zip(ids, vectors, codes, strict=True):
            copy.write_row((doc_id, *rerank.encode(doc_vectors.to(device), doc_codes)))


def delete_documents(conn: psycopg.Connection[Any], index_id: int, external_ids: Sequence[str]) -> set[str]:
    """Delete documents by external id; return the ids that were there."""
    rows = conn.execute(query("documents_delete"), {"index_id": index_id, "external_ids": list(external_ids)}).fetchall()
    return {row[0] for row in rows}


def finish_build(conn: psycopg.Connection[Any], index_id: int) -> None:
    """A build's or an import's last transaction: the index ready, its token-change log trimmed."""
    with conn.transaction():
        conn.execute(query("index_mark_ready"), {"index_id": index_id})
        trim_changes(conn, index_id)


def trim_changes(conn: psycopg.Connection[Any], index_id: int) -> None:
    """Keep the index's token-change log bounded (a no-op until it holds twice CHANGES_KEPT rows)."""
    conn.execute(query("token_changes_trim"), {"index_id": index_id, "keep": CHANGES_KEPT})


def drop_index(conn: psycopg.Connection[Any], name: str) -> bool:
    """Drop index ``name`` (and its token-change log) in the caller's transaction; False if there was none."""
    row = conn.execute(query("index_drop"), {"name": name}).fetchone()
    if row is not None:
        conn.execute(query("index_forget_changes"), {"index_id": row[0]})
    return row is not None
