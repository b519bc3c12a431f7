"""The ingest worker: index documents that applications insert or update with plain SQL.

A row inserted into ``colpg.documents`` (or whose text changes) is ``queued`` and announced
on the channel ``colpg_ingest``. Each batch is one transaction: claim queued rows with
``FOR UPDATE SKIP LOCKED`` (so workers never share a row), encode, replace their tokens,
mark them ``ready`` — or ``failed`` with the reason, without holding back the others. A
worker killed mid-batch never commits, so its rows are simply queued again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import torch

from colpg import db, store
from colpg.codec import ResidualCodec
from colpg.encoder import Encoder
from colpg.errors import ColpgError
from colpg.index import Index
from colpg.resources import query
from colpg.stores import RerankStore

__all__ = ["IngestWorker"]

logger = logging.getLogger(__name__)

CHANNEL = "colpg_ingest"


@dataclass(frozen=True)
class _Loaded:
    """An index as the worker holds it: model, codec, rerank store, and which build they belong to."""

    encoder: Encoder
    codec: ResidualCodec
    rerank: RerankStore
    version: tuple[int, dt.datetime]  # the index's id and updated_at


class IngestWorker:
    """Claims queued documents in batches and indexes them with their index's model and codec."""

    def __init__(self, url: str | None = None, *, batch_size: int = 64, index_name: str | None = None) -> None:
        self.url = url or db.database_url()
        self.batch_size = batch_size
        self.index_name = index_name
        self._indexes: dict[str, _Loaded] = {}

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

    def run_once(self) -> int:
        """Index queued documents until none is left; returns how many rows were settled (ready or failed)."""
        settled = 0
        with db.connect(self.url, autocommit=True) as conn:
            while batch := self._batch(conn):
                settled += batch
        return settled

    def run_forever(self, poll_seconds: float = 30.0) -> None:
        """Index what is queued, then sleep until NOTIFY colpg_ingest (or ``poll_seconds``) and repeat."""
        with db.connect(self.url, autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            while True:
                settled = self.run_once()
                if settled:
                    logger.info("indexed %d queued documents", settled)
                for _ in listener.notifies(timeout=poll_seconds, stop_after=1):
                    pass

    def _batch(self, conn: psycopg.Connection[Any]) -> int:
        """One transaction: claim, encode, write, mark. Returns the rows settled (0: queue empty)."""
        with conn.transaction():
            rows = conn.execute(query("ingest_claim"), {"limit": self.batch_size, "index_name": self.index_name}).fetchall()
            if not rows:
                return 0
            by_index: dict[str, list[tuple[int, str | None]]] = {}
            versions: dict[str, tuple[int, dt.datetime]] = {}
            for doc_id, index_name, text, index_id, updated_at in rows:
                by_index.setdefault(index_name, []).append((doc_id, text))
                versions[index_name] = (index_id, updated_at)
            for index_name, documents in by_index.items():
                self._index_documents(conn, self._index(conn, index_name, versions[index_name]), index_name, documents)
        return len(rows)

    def _index_documents(
        self, conn: psycopg.Connection[Any], loaded: _Loaded, index_name: str, documents: Sequence[tuple[int, str | None]]
    ) -> None:
        encoder, codec, rerank, index_id = loaded.encoder, loaded.codec, loaded.rerank, loaded.version[0]
        outcome: dict[int, str | None] = {}  # id -> None (ready) or the reason it failed
        encoded: list[tuple[int, torch.Tensor]] = []
        for doc_id, text in documents:
            if text is None or not text.strip():
                outcome[doc_id] = "the document has no text to encode"
        todo = [(doc_id, text) for doc_id, text in documents if doc_id not in outcome and text is not None]
        try:
            vectors = encoder.encode_documents([text for _, text in todo], progress=False)
            encoded = list(zip([doc_id for doc_id, _ in todo], vectors, strict=True))
        except (ColpgError, RuntimeError, ValueError):
            # Find the culprit(s): encode one by one, so one bad row does not fail the batch.
            for doc_id, text in todo:
                try:
                    encoded.append((doc_id, encoder.encode_documents([text], progress=False)[0]))
                except (ColpgError, RuntimeError, ValueError) as exc:
                    outcome[doc_id] = f"{type(exc).__name__}: {exc}"
        for doc_id, vectors_of_doc in encoded:
            if len(vectors_of_doc) == 0:
                outcome[doc_id] = "the text has no tokens left after punctuation is skipped"
        encoded = [(doc_id, v) for doc_id, v in encoded if doc_id not in outcome]
        ids = [doc_id for doc_id, _ in encoded]
        # Every claimed row loses its old tokens, the failed ones too: a document whose new text
        # cannot be indexed must not be found by the text it no longer has.
        conn.execute(query("ingest_clear_tokens"), {"ids": [doc_id for doc_id, _ in documents]})
        if encoded:
            store.write_tokens(conn, index_id, ids, [v for _, v in encoded], codec, rerank)
        store.trim_changes(conn, index_id)
        outcome.update(dict.fromkeys(ids))
        conn.execute(
            query("ingest_mark"),
            {
                "ids": list(outcome),
                "statuses": ["ready" if reason is None else "failed" for reason in outcome.values()],
                "errors": list(outcome.values()),
            },
        )
        for doc_id, reason in outcome.items():
            if reason is not None:
                logger.warning("document %d of index %r failed: %s", doc_id, index_name, reason)
