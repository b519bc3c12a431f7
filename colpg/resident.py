"""Reading an index's token rows into the search process's resident view (colpg.view).

A view is loaded once, streaming every token row of the index in one snapshot, and then
moved forward at each search by the documents that ``colpg.token_changes`` says changed
since the view's snapshot: their current rows are read here, in the search's snapshot.
Statements come from ``sql/queries`` and run on the search transaction's psycopg connection,
in binary results: residuals come as bytes rather than hex text (bench/rows.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
import torch

from colpg.distribute import WATERMARK_PREFIX, SyncRow, distributed_sync
from colpg.progress import bar as progress_bar
from colpg.resources import query
from colpg.stores import codes_from_array_send
from colpg.view import DocumentRows, IndexView

__all__ = ["changed_rows", "load_view", "newer", "sync"]

LOAD_BATCH = 2048  # token rows per round trip when loading a view


def _rows(records: Sequence[tuple[Any, ...]], residual_bytes: int) -> DocumentRows:
    """``(document_id, version, ntokens, array_send(codes), residuals, padding_gap)`` records as tensors."""
    if not records:
        return DocumentRows.concat([], residual_bytes)
    residuals = np.frombuffer(b"".join(r[4] for r in records), dtype=np.uint8).reshape(-1, residual_bytes)
    return DocumentRows(
        ids=torch.tensor([r[0] for r in records], dtype=torch.long),
        versions=torch.tensor([r[1] for r in records], dtype=torch.long),
        lengths=torch.tensor([r[2] for r in records], dtype=torch.long),
        codes=torch.from_numpy(np.concatenate([codes_from_array_send(r[3]) for r in records]).astype(np.int64)),
        residuals=torch.from_numpy(residuals.copy()),
        gaps=torch.tensor([r[5] for r in records], dtype=torch.float32),
    )


def _batches(cursor: psycopg.Cursor[Any]) -> Iterable[list[tuple[Any, ...]]]:
    while batch := cursor.fetchmany(LOAD_BATCH):
        yield batch


def load_view(
    conn: psycopg.Connection[Any],
    index_id: int,
    num_centroids: int,
    residual_bytes: int,
    snapshot: str,
    device: torch.device,
    *,
    name: str,
    progress: bool | None = None,
) -> IndexView:
    """Every token row of the index, as the caller's transaction (at ``snapshot``) sees them."""
    parts = []
    with conn.cursor(name="colpg_load_view", binary=True) as cursor:
        cursor.execute(query("index_tokens"), {"index_id": index_id})
        with progress_bar(show=progress, desc=f"loading {name}", unit=" docs") as bar:
            for batch in _batches(cursor):
                parts.append(_rows(batch, residual_bytes))
                bar.update(len(batch))
    return IndexView.build(DocumentRows.concat(parts, residual_bytes), num_centroids, snapshot, device)


def changed_rows(conn: psycopg.Connection[Any], ids: Sequence[int], residual_bytes: int) -> DocumentRows:
    """The current token rows of ``ids``; a deleted document has none."""
    records = conn.execute(query("search_tokens"), {"ids": list(ids)}, binary=True).fetchall()
    return _rows(records, residual_bytes)


def sync(conn: psycopg.Connection[Any], name: str, view: IndexView | None, *, distributed: bool) -> SyncRow | None:
    """``(index id, updated_at, watermark, reload, changed document ids)`` of index ``name`` for a
    view synced to ``view.watermark`` (None: no view yet), or None when there is no such index.

    On one server the watermark is the search's snapshot and the changes are the token-log rows
    the view's snapshot could not see (``search_sync.sql``); on a Citus cluster, log counts and
    row versions (colpg.distribute).
    """
    if distributed:
        return distributed_sync(conn, name, view)
    row = conn.execute(query("search_sync"), {"name": name, "since": view.watermark if view is not None else None}).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3], list(row[4]))


def newer(watermark: str, held: str) -> bool:
    """Whether a search's ``watermark`` is ahead of the view's (``held``): a snapshot whose xmax
    is later (one server), or another log count (a cluster's, which only a sync can tell apart)."""
    if watermark == held:
        return False
    if watermark.startswith(WATERMARK_PREFIX):
        return True
    return int(watermark.split(":")[1]) >= int(held.split(":")[1])
