"""The ingest worker: index documents that applications insert or update with plain SQL.

A row inserted into ``colpg.documents`` (or whose text changes) is ``queued`` and announced
on the channel ``colpg_ingest``. Each batch is one transaction: claim queued rows with
``FOR UPDATE SKIP LOCKED`` (so workers never share a row), encode, replace their tokens,
mark them ``ready`` — or ``failed`` with the reason, without holding back the others. A
worker killed mid-batch never commits, so its rows are simply queued again.

Faults: :meth:`IngestWorker.run_forever` outlives the server. A lost connection, a restart,
a full disk, a read-only server or a rebuild racing a batch (see :mod:`colpg.faults`) rolls
the batch back, logs a WARNING with the reason, and retries with capped backoff until the
server is usable again; ``max_failures`` makes it give up after that many failures in a row.
An index whose model or codec cannot be loaded (a moved model folder) fails its own rows
with the reason and the other indexes' rows go on; once the folder is back, requeue them as
the table's owner: ``UPDATE colpg.documents SET status = 'queued' WHERE status = 'failed'
AND index_name = '<name>'``. Health: with ``health_file`` set, the file is touched after each
pass over the queue, so a probe can check that its mtime is younger than a few poll periods.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import torch

from colpg import db, store
from colpg.codec import ResidualCodec
from colpg.distribute import claim_queued, is_distributed
from colpg.encoder import Encoder
from colpg.errors import ColpgError, DatabaseUnavailable
from colpg.faults import Backoff, transient_reason
from colpg.index import Index
from colpg.resources import query
from colpg.stores import RerankStore

__all__ = ["IngestWorker"]

logger = logging.getLogger(__name__)

CHANNEL = "colpg_ingest"
#: What may go wrong loading an index's model or codec that fails only that index's rows.
LOAD_ERRORS = (ColpgError, OSError, RuntimeError, ValueError)
REQUEUE_HINT = "fix it, then set status = 'queued' on this index's failed rows"


@dataclass(frozen=True)
class _Loaded:
    """An index as the worker holds it: model, codec, rerank store, and which build they belong to."""

    encoder: Encoder
    codec: ResidualCodec
    rerank: RerankStore
    version: tuple[int, dt.datetime]  # the index's id and updated_at


#: Seconds between queue checks at most on a Citus cluster, where inserts send no NOTIFY.
CLUSTER_POLL_S = 2.0


class IngestWorker:
    """Claims queued documents in batches and indexes them with their index's model and codec."""

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_size: int = 64,
        index_name: str | None = None,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        health_file: Path | None = None,
    ) -> None:
        self.url = url or db.database_url()
        self.batch_size = batch_size
        self.index_name = index_name
        self.backoff = backoff or Backoff()
        self.max_failures = max_failures
        self.health_file = health_file
        self._indexes: dict[str, _Loaded] = {}
        self._stopping = threading.Event()
        self._failures = 0
        self._distributed: bool | None = None  # on a Citus cluster (known at the first batch)

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return (within one poll period), from another thread or a signal handler."""
        self._stopping.set()

    def run_once(self) -> int:
        """Index queued documents until none is left; returns how many rows were settled (ready or failed)."""
        with db.connect(self.url, autocommit=True) as conn:
            return self._drain(conn)

    def run_forever(self, poll_seconds: float = 30.0) -> None:
        """Index what is queued, then sleep until NOTIFY colpg_ingest (or ``poll_seconds``) and repeat, until :meth:`stop`.

        Raises:
            DatabaseUnavailable: ``max_failures`` passes failed in a row.
        """
        while not self._stopping.is_set():
            try:
                self._serve(poll_seconds)
            except Exception as exc:
                reason = transient_reason(exc)
                if reason is None:
                    raise
                self._failed(reason, exc)

    def _serve(self, poll_seconds: float) -> None:
        """Listen and drain on two connections until stopped; a database error ends it (the caller retries)."""
        with db.connect(self.url, autocommit=True) as listener, db.connect(self.url, autocommit=True) as conn:
            listener.execute(f"LISTEN {CHANNEL}")
            while not self._stopping.is_set():
                settled = self._drain(conn)
                self._healthy()
                if settled:
                    logger.info("indexed %d queued documents", settled)
                # On a Citus cluster no NOTIFY comes (colpg.distribute): look at the queue often instead.
                wait = min(poll_seconds, CLUSTER_POLL_S) if self._distributed else poll_seconds
                for _ in listener.notifies(timeout=wait, stop_after=1):
                    pass

    def _failed(self, reason: str, exc: Exception) -> None:
        """Count a failed pass; give up after ``max_failures`` in a row, else wait the backoff."""
        self._failures += 1
        where = db.describe_url(self.url)
        if self.max_failures is not None and self._failures >= self.max_failures:
            raise DatabaseUnavailable(
                f"the worker gave up after {self._failures} failed attempts in a row at {where}; last: {reason}"
            ) from exc
        delay = self.backoff.delay(self._failures)
        logger.warning("ingest paused at %s (failure %d in a row): %s; retrying in %.1f s", where, self._failures, reason, delay)
        self._stopping.wait(delay)

    def _healthy(self) -> None:
        """A pass over the queue succeeded: reset the failure count, touch the health file."""
        if self._failures:
            logger.warning("ingest resumed at %s after %d failed attempts", db.describe_url(self.url), self._failures)
            self._failures = 0
        if self.health_file is not None:
            self.health_file.touch()

    def _drain(self, conn: psycopg.Connection[Any]) -> int:
        settled = 0
        while batch := self._batch(conn):
            settled += batch
        return settled

    def _index(self, conn: psycopg.Connection[Any], name: str, version: tuple[int, dt.datetime]) -> _Loaded:
        """The index's encoder and codec, loaded once per worker and again after a rebuild
        (``version``, the index's id and updated_at as the claiming transaction sees them)."""
        loaded = self._indexes.get(name)
        if loaded is None or loaded.version != version:
            record = store.get_index(conn, name)
            same_model = loaded is not None and loaded.encoder.name == record.model
            encoder = loaded.encoder if loaded is not None and same_model else Index(name, url=self.url).encoder
            codec, rerank = store.load_codec(conn, record, encoder.device)
            loaded = _Loaded(encoder, codec, rerank, version)
            self._indexes[name] = loaded
        return loaded

    def _batch(self, conn: psycopg.Connection[Any]) -> int:
        """One transaction: claim, encode, write, mark. Returns the rows settled (0: queue empty)."""
        with conn.transaction():
            if self._distributed is None:
                self._distributed = is_distributed(conn)
            if self._distributed:
                rows = claim_queued(conn, self.batch_size, self.index_name)
            else:
                rows = conn.execute(query("ingest_claim"), {"limit": self.batch_size, "index_name": self.index_name}).fetchall()
            if not rows:
                return 0
            by_index: dict[str, list[tuple[int, str | None]]] = {}
            versions: dict[str, tuple[int, dt.datetime]] = {}
            for doc_id, index_name, text, index_id, updated_at in rows:
                by_index.setdefault(index_name, []).append((doc_id, text))
                versions[index_name] = (index_id, updated_at)
            for index_name, documents in by_index.items():
                try:
                    loaded = self._index(conn, index_name, versions[index_name])
                except DatabaseUnavailable:
                    raise  # the server, not the index: wait it out
                except LOAD_ERRORS as exc:
                    reason = f"index {index_name!r} cannot load its model or codec: {type(exc).__name__}: {exc}; {REQUEUE_HINT}"
                    self._settle(conn, index_name, versions[index_name][0], documents, [], dict.fromkeys((d for d, _ in documents), reason))
                    continue
                encoded, outcome = _encode(loaded.encoder, documents)
                self._settle(conn, index_name, loaded.version[0], documents, encoded, outcome, loaded)
        return len(rows)

    def _settle(
        self,
        conn: psycopg.Connection[Any],
        index_name: str,
        index_id: int,
        documents: Sequence[tuple[int, str | None]],
        encoded: Sequence[tuple[int, torch.Tensor]],
        failed: dict[int, str],
        loaded: _Loaded | None = None,
    ) -> None:
        """Replace the claimed rows' tokens with ``encoded`` (by ``loaded``'s codec) and mark each ready or failed."""
        # Every claimed row loses its old tokens, the failed ones too: a document whose new text
        # cannot be indexed must not be found by the text it no longer has.
        conn.execute(query("ingest_clear_tokens"), {"ids": [doc_id for doc_id, _ in documents]})
        if encoded and loaded is not None:
            store.write_tokens(conn, index_id, [doc_id for doc_id, _ in encoded], [v for _, v in encoded], loaded.codec, loaded.rerank)
        store.trim_changes(conn, index_id)
        outcome: dict[int, str | None] = {**failed, **dict.fromkeys(doc_id for doc_id, _ in encoded)}
        conn.execute(
            query("ingest_mark"),
            {
                "ids": list(outcome),
                "statuses": ["ready" if reason is None else "failed" for reason in outcome.values()],
                "errors": list(outcome.values()),
            },
        )
        for doc_id, reason in failed.items():
            logger.warning("document %d of index %r failed: %s", doc_id, index_name, reason)


def _encode(encoder: Encoder, documents: Sequence[tuple[int, str | None]]) -> tuple[list[tuple[int, torch.Tensor]], dict[int, str]]:
    """Token vectors of the documents that can be encoded, and the reason each other one cannot."""
    failed: dict[int, str] = {}
    for doc_id, text in documents:
        if text is None or not text.strip():
            failed[doc_id] = "the document has no text to encode"
    todo = [(doc_id, text) for doc_id, text in documents if doc_id not in failed and text is not None]
    encoded: list[tuple[int, torch.Tensor]] = []
    try:
        vectors = encoder.encode_documents([text for _, text in todo], progress=False)
        encoded = list(zip([doc_id for doc_id, _ in todo], vectors, strict=True))
    except (ColpgError, RuntimeError, ValueError):
        # Find the culprit(s): encode one by one, so one bad row does not fail the batch.
        for doc_id, text in todo:
            try:
                encoded.append((doc_id, encoder.encode_documents([text], progress=False)[0]))
            except (ColpgError, RuntimeError, ValueError) as exc:
                failed[doc_id] = f"{type(exc).__name__}: {exc}"
    for doc_id, vectors_of_doc in encoded:
        if len(vectors_of_doc) == 0:
            failed[doc_id] = "the text has no tokens left after punctuation is skipped"
    return [(doc_id, v) for doc_id, v in encoded if doc_id not in failed], failed
