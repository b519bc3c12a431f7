"""The HTTP service (``colpg serve``): search, documents and stats of indexes over JSON.

One process holds each index it serves (model, resident tokens, row cache, connection pool), loaded
on first use; FastAPI runs the handlers in its thread pool, the searcher is thread-safe, and
the queries of concurrent requests are encoded together in one batch (:class:`QueryBatcher`).
Errors are JSON ``{"detail": message}`` with 404 for an unknown index, 422 for bad input
and 413 for an oversized request.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from colpg import db
from colpg.constants import INDEX_NAME_PATTERN
from colpg.encoder import Encoder
from colpg.errors import ColpgError, ConfigurationError, DocumentError, DocumentNotFound, EncodingError, IndexNotFound
from colpg.index import Index
from colpg.orm import Document
from colpg.search import Hit

__all__ = ["create_app"]

MAX_QUERY_CHARS = 10_000
MAX_DOCUMENTS_PER_REQUEST = 1_000
MAX_DOCUMENT_CHARS = 1_000_000
MAX_QUERY_VECTORS = 512

IndexName = Annotated[str, Path(pattern=INDEX_NAME_PATTERN, description="Index name.")]
JsonValue = str | int | float | bool | None


class TooLarge(ColpgError):
    """A request beyond the service's size limits (HTTP 413)."""


class SearchRequest(BaseModel):
    """Text, or precomputed query vectors ([tokens][dim]), and what to return."""

    query: str | None = Field(None, description="Query text; encoded by the index's model.")
    vectors: list[list[float]] | None = Field(None, description="Precomputed query token vectors instead of text.")
    k: int = Field(10, ge=1, le=1000)
    filter: dict[str, JsonValue] | None = Field(
        None, description="Metadata filter: every key must hold exactly this value (JSON containment, metadata @> filter)."
    )
    explain: bool = Field(False, description="Per query token, the document token that matched it best (text queries).")


class SearchResponse(BaseModel):
    hits: list[Hit]


class EncodeRequest(BaseModel):
    query: str = Field(..., description="Query text, encoded as search encodes it (cut to the model's query length).")


class EncodeResponse(BaseModel):
    vectors: list[list[float]] = Field(..., description="One vector per query token, for colpg's SQL functions (vector[]).")


class DocumentIn(BaseModel):
    id: str = Field(..., min_length=1)
    text: str = Field(..., description="Must contain something to encode.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsIn(BaseModel):
    documents: list[DocumentIn] = Field(..., min_length=1)


class Changed(BaseModel):
    changed: int


class QueryBatcher:
    """Encodes the queries of concurrent requests together: one forward pass per batch on the device.

    A request waits at most ``wait_s`` for others to join; a batch that fails (an empty
    query among them) is encoded one query at a time, so only the bad request fails.
    """

    def __init__(self, encoder: Encoder, max_batch: int = 32, wait_s: float = 0.002) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.pending: queue.Queue[tuple[str, Future[torch.Tensor]]] = queue.Queue()
        threading.Thread(target=self._run, name="colpg-query-batcher", daemon=True).start()

    def encode(self, text: str) -> torch.Tensor:
        """Shapes: returns [query_maxlen, dim]."""
        future: Future[torch.Tensor] = Future()
        self.pending.put((text, future))
        return future.result()

    def _run(self) -> None:
        while True:
            batch = [self.pending.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.pending.get(timeout=left))
                except queue.Empty:
                    break
            try:
                for (_, future), vectors in zip(batch, self.encoder.encode_queries([t for t, _ in batch]), strict=True):
                    future.set_result(vectors)
            except Exception:  # noqa: BLE001 - retried one by one, each request gets its own error
                for text, future in batch:
                    try:
                        future.set_result(self.encoder.encode_queries([text])[0])
                    except Exception as exc:  # noqa: BLE001
                        future.set_exception(exc)


def create_app(url: str | None = None, *, cache_bytes: int | None = None) -> FastAPI:
    """The service for the database at ``url`` (default: COLPG_DATABASE_URL or the embedded server);
    each index keeps at most ``cache_bytes`` of rerank rows in memory (colpg.rowcache)."""
    database_url = url or db.database_url()
    app = FastAPI(title="colpg", summary="ColBERT late-interaction retrieval inside PostgreSQL.")
    indexes: dict[str, Index] = {}
    batchers: dict[str, QueryBatcher] = {}
    lock = threading.Lock()

    def index_named(name: str) -> Index:
        with lock:
            if name not in indexes:
                indexes[name] = Index(name, url=database_url, cache_bytes=cache_bytes)
            return indexes[name]

    def batcher(name: str) -> QueryBatcher:
        index = index_named(name)
        with lock:
            if name not in batchers:
                batchers[name] = QueryBatcher(index.encoder)
            return batchers[name]

    def fail(status: int, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    for missing in (IndexNotFound, DocumentNotFound):

        @app.exception_handler(missing)
        def not_found(_: Request, exc: Exception) -> JSONResponse:
            return fail(404, exc)

    @app.exception_handler(TooLarge)
    def too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return fail(413, exc)

    for error in (ConfigurationError, DocumentError, EncodingError):

        @app.exception_handler(error)
        def bad_input(_: Request, exc: Exception) -> JSONResponse:
            return fail(422, exc)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """The database answers and colpg's schema is in place."""
        with db.connect(database_url) as conn:
            conn.execute("SELECT 1 FROM colpg.indexes LIMIT 1")
        return {"status": "ok", "indexes_loaded": sorted(indexes)}

    @app.get("/indexes/{name}")
    def index_info(name: IndexName) -> dict[str, Any]:
        """Counts, bytes per token and table sizes of an index."""
        return index_named(name).info()

    @app.post("/indexes/{name}/encode", response_model=EncodeResponse)
    def encode(name: IndexName, request: EncodeRequest) -> EncodeResponse:
        """A text query's token vectors by the index's model, for SQL (colpg.candidates, search_approx, maxsim)."""
        return EncodeResponse(vectors=batcher(name).encode(_query_text(request.query)).tolist())

    @app.post("/indexes/{name}/search", response_model=SearchResponse)
    def search(name: IndexName, request: SearchRequest) -> SearchResponse:
        """The k best documents for a text query or for precomputed query vectors."""
        if (request.query is None) == (request.vectors is None):
            raise ConfigurationError("give exactly one of query (text) and vectors")
        index = index_named(name)
        where = Document.metadata_.contains(request.filter) if request.filter else None
        if request.query is not None:
            vectors = batcher(name).encode(_query_text(request.query))
        else:
            vectors = _vectors(request.vectors or [], index.record.dim)
        searcher = index.searcher
        ranked = searcher.search_vectors(vectors, request.k, where=where)
        return SearchResponse(hits=searcher.hits(request.query, vectors, ranked, request.explain and request.query is not None))

    @app.post("/indexes/{name}/documents", response_model=Changed, status_code=201)
    def add_documents(name: IndexName, request: DocumentsIn) -> Changed:
        """Add documents (encoded and indexed before the response); an id already present is an error."""
        return Changed(changed=index_named(name).add(_documents(request)))

    @app.put("/indexes/{name}/documents", response_model=Changed)
    def update_documents(name: IndexName, request: DocumentsIn) -> Changed:
        """Replace documents (text, metadata and tokens); an id the index does not hold is an error."""
        return Changed(changed=index_named(name).update(_documents(request)))

    @app.delete("/indexes/{name}/documents/{external_id}", response_model=Changed)
    def delete_document(name: IndexName, external_id: str) -> Changed:
        """Delete one document by its id."""
        return Changed(changed=index_named(name).delete([external_id]))

    return app


def _query_text(query: str) -> str:
    """A text query within the service's size limit."""
    if len(query) > MAX_QUERY_CHARS:
        raise TooLarge(f"query of {len(query)} characters; at most {MAX_QUERY_CHARS}")
    return query


def _documents(request: DocumentsIn) -> list[dict[str, Any]]:
    """The request's documents as colpg.collection reads them, within the service's size limits."""
    if len(request.documents) > MAX_DOCUMENTS_PER_REQUEST:
        raise TooLarge(f"{len(request.documents)} documents in one request; at most {MAX_DOCUMENTS_PER_REQUEST}")
    if any(len(d.text) > MAX_DOCUMENT_CHARS for d in request.documents):
        raise TooLarge(f"a document is longer than {MAX_DOCUMENT_CHARS} characters")
    return [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in request.documents]


def _vectors(rows: list[list[float]], dim: int) -> torch.Tensor:
    if not rows or any(len(row) != dim for row in rows):
        raise ConfigurationError(f"vectors must be a non-empty list of {dim}-number rows")
    if len(rows) > MAX_QUERY_VECTORS:
        raise TooLarge(f"{len(rows)} query vectors; at most {MAX_QUERY_VECTORS}")
    vectors = torch.tensor(rows, dtype=torch.float32)
    if not torch.isfinite(vectors).all():
        raise ConfigurationError("vectors must be finite numbers")
    return vectors
