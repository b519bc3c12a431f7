"""colpg on a Citus cluster: distributing its tables, and what changes for readers and writers.

``colpg db distribute`` (:func:`distribute`) turns a migrated schema on a Citus coordinator into
distributed tables (sql/queries/citus_distribute.sql says which and why). Everything else goes
on through the coordinator's URL, with three differences, each handled here:

- **No cluster-wide snapshot, and transaction ids per node.** On one server a searcher asks for
  the token-log rows its last snapshot could not see (``search_sync.sql``). On a cluster the
  log's ``xid`` values come from the workers and mean nothing against the coordinator's
  snapshot, so :func:`distributed_sync` compares counts instead: the log of an index only
  grows between trims, and each trim bumps ``token_changes_trimmed.trims``. When the count
  moved, the versions (``xmin``, unique per document's row on its node) of the documents the
  log names are compared with the resident view's, and only the documents whose version
  differs are read again. A change committed after the count was read moves it again, so the
  next search reads it: no change is missed, none is applied twice.
- **Uniqueness of external ids** is not a constraint on a cluster (Citus enforces only unique
  keys that hold the distribution column): colpg's writers take :func:`lock_index` and check
  the ids in the same transaction. Plain SQL inserts must check for themselves.
- **Claims by the ingest worker**: Citus locks rows (``FOR UPDATE SKIP LOCKED``) only in
  statements that reach one shard, so the worker lists queued ids first and then claims each
  one by its id (:func:`claim_queued`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from colpg.errors import SchemaError
from colpg.resources import query, read_sql, statements

if TYPE_CHECKING:
    from colpg.view import IndexView

__all__ = ["SyncRow", "citus_state", "claim_queued", "describe", "distribute", "distributed_sync", "is_distributed", "lock_index"]

#: Marks a resident view's watermark as a cluster's ("citus:<log rows>:<trims>"), not a snapshot.
WATERMARK_PREFIX = "citus:"


def citus_state(conn: psycopg.Connection[Any]) -> tuple[bool, bool]:
    """Whether the database has the citus extension, and whether colpg's tables exist (migrated)."""
    row = conn.execute(query("citus_state")).fetchone()
    return (bool(row[0]), bool(row[1])) if row is not None else (False, False)


def _tables_distributed(conn: psycopg.Connection[Any]) -> bool:
    """Whether colpg.documents is a Citus table (only asked where Citus is installed and colpg migrated)."""
    row = conn.execute(query("citus_distributed")).fetchone()
    return bool(row and row[0])


def is_distributed(conn: psycopg.Connection[Any]) -> bool:
    """Whether colpg's tables are distributed (Citus installed and ``colpg db distribute`` run)."""
    installed, migrated = citus_state(conn)
    return installed and migrated and _tables_distributed(conn)


def describe(conn: psycopg.Connection[Any]) -> str:
    """One line for ``colpg db status``: whether Citus is there and colpg's tables are distributed."""
    installed, migrated = citus_state(conn)
    if not installed:
        return "not installed (one server)"
    workers = len(conn.execute(query("cluster_active_workers")).fetchall())
    if not (migrated and _tables_distributed(conn)):
        return f"installed, {workers} active workers; colpg's tables are not distributed (`colpg db distribute`)"
    return f"colpg's tables distributed over {workers} active workers"


def distribute(conn: psycopg.Connection[Any]) -> bool:
    """Distribute colpg's tables on this Citus coordinator, in one transaction; False when they were already.

    Raises:
        SchemaError: the database has no citus extension, or colpg's schema is not migrated.
    """
    installed, migrated = citus_state(conn)
    if not installed:
        raise SchemaError(
            "the database has no citus extension: run `CREATE EXTENSION citus` on a Citus coordinator"
            " (`colpg db cluster up` starts a local one) before `colpg db distribute`"
        )
    if not migrated:
        raise SchemaError("colpg's tables are not there yet: run `colpg db upgrade` first, then `colpg db distribute`")
    if _tables_distributed(conn):
        return False
    with conn.transaction():
        for statement in statements(read_sql("queries/citus_distribute.sql")):
            conn.execute(statement.encode())  # one at a time, as Citus forwards DDL to the workers
    return True


def lock_index(conn: psycopg.Connection[Any], index_id: int) -> None:
    """Serialise writers of one index's documents until the transaction ends, so that checking
    an external id and inserting it cannot interleave (the constraint that does this on one
    server cannot exist on a cluster; the lock is taken on the coordinator)."""
    conn.execute(query("documents_lock_index"), {"index_id": index_id})


#: What a search learns about an index: its id and updated_at, the watermark to sync the view to,
#: whether to load the view again instead, and the documents whose token rows changed.
SyncRow = tuple[int, Any, str, bool, list[int]]


def _watermark(log_rows: int, trims: int) -> str:
    return f"{WATERMARK_PREFIX}{log_rows}:{trims}"


def _trims(watermark: str) -> int | None:
    return int(watermark.rsplit(":", 1)[1]) if watermark.startswith(WATERMARK_PREFIX) else None


def distributed_sync(conn: psycopg.Connection[Any], name: str, view: IndexView | None) -> SyncRow | None:
    """The sync of a resident view (None: none yet) on a cluster, as ``search_sync.sql``'s row on
    one server; None when there is no index ``name``. The view is loaded again when the log was
    trimmed since its watermark."""
    row = conn.execute(query("sync_index_row"), {"name": name}).fetchone()
    if row is None:
        return None
    index_id, updated_at, trims = row
    log_rows = int(conn.execute(query("sync_log_rows"), {"index_id": index_id}).fetchone()[0])  # type: ignore[index]
    current = _watermark(log_rows, trims)
    if view is None or _trims(view.watermark) != trims:
        return index_id, updated_at, current, True, []
    if view.watermark == current:
        return index_id, updated_at, current, False, []
    logged = [r[0] for r in conn.execute(query("sync_logged_documents"), {"index_id": index_id}).fetchall()]
    now = dict(conn.execute(query("sync_versions"), {"ids": logged}).fetchall())
    changed = [doc_id for doc_id, held in zip(logged, view.versions_of(logged), strict=True) if now.get(doc_id) != held]
    return index_id, updated_at, current, False, changed


def claim_queued(conn: psycopg.Connection[Any], limit: int, index_name: str | None) -> Sequence[tuple[Any, ...]]:
    """Up to ``limit`` queued documents of ready indexes, each locked by a statement that reaches its shard only
    (rows another worker holds are skipped); the same columns as ``ingest_claim.sql``."""
    ids = [r[0] for r in conn.execute(query("ingest_queued_ids"), {"limit": limit, "index_name": index_name}).fetchall()]
    claimed = []
    for doc_id in ids:
        row = conn.execute(query("ingest_claim_one"), {"id": doc_id}).fetchone()
        if row is not None:
            claimed.append(row)
    return claimed
