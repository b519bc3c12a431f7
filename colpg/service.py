"""The HTTP service (``colpg serve``): search, rerank, documents and stats of indexes over JSON.

One process holds each index it serves (model, resident tokens, row cache, connection pool), loaded
on first use; FastAPI runs the handlers in its thread pool, the searcher is thread-safe, and
the queries of concurrent requests are encoded together in one batch (:class:`QueryBatcher`).
Requests need an API key (colpg.auth); bodies and fields are size-limited (colpg.limits,
colpg.service_models); errors are JSON ``{"detail": ...}`` (colpg.service_errors).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Annotated, Any

import psycopg
import torch
from fastapi import Depends, FastAPI, Path
from fastapi.responses import JSONResponse

from colpg import db
from colpg.auth import ApiKeys, requirement
from colpg.constants import INDEX_NAME_PATTERN
from colpg.device import keep_freed_memory
from colpg.encoder import Encoder
from colpg.errors import ConfigurationError, SchemaError
from colpg.hybrid import hybrid_search
from colpg.index import Index
from colpg.limits import BodyLimit, max_body_bytes_from_env
from colpg.orm import Document
from colpg.reranking import rerank_ids, rerank_texts
from colpg.resources import query
from colpg.results import hits
from colpg.service_errors import RETRY_AFTER_S, LastResort, install_error_handlers, unavailable_reason
from colpg.service_models import (
    Changed,
    DocumentId,
    DocumentsIn,
    EncodeRequest,
    EncodeResponse,
    Health,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
    TextRerankRequest,
    TextRerankResponse,
)

__all__ = ["create_app"]

#: /health answers within about this many seconds when the database host does not answer.
HEALTH_CONNECT_TIMEOUT_S = 2

IndexName = Annotated[str, Path(pattern=INDEX_NAME_PATTERN, description="Index name.")]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database is unavailable; retry after the Retry-After header's seconds."}
}


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


def create_app(
    url: str | None = None,
    *,
    cache_bytes: int | None = None,
    keys: ApiKeys | None = None,
    anonymous: bool = False,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The service for the database at ``url`` (default: COLPG_DATABASE_URL or the embedded server).

    Requests need one of ``keys`` (default: COLPG_API_KEYS); ``anonymous`` serves without keys,
    and only it does: no keys and no ``anonymous`` is an error. Bodies above ``max_body_bytes``
    (default: COLPG_MAX_BODY_BYTES, else 16 MiB) are refused unread; each index keeps at most
    ``cache_bytes`` of rerank rows in memory (colpg.rowcache).
    """
    keys = None if anonymous else (keys if keys is not None else ApiKeys.from_env())
    if keys is not None and not keys:
        raise ConfigurationError(
            "the service needs API keys: set COLPG_API_KEYS=read:KEY,write:KEY (keys of 16+ characters),"
            " or serve without login on this machine only (colpg serve --no-auth)"
        )
    limit = max_body_bytes if max_body_bytes is not None else max_body_bytes_from_env()
    database_url = url or db.database_url()
    keep_freed_memory()  # before the server's threads start, each of which could make a heap of its own
    app = FastAPI(title="colpg", summary="ColBERT late-interaction retrieval inside PostgreSQL.")
    app.add_middleware(BodyLimit, max_bytes=limit)
    app.add_middleware(LastResort)
    install_error_handlers(app)
    read = [Depends(requirement(keys, "read"))]
    write = [Depends(requirement(keys, "write"))]
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

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "A dependency is down."}})
    def health() -> Health | JSONResponse:
        """The database answers and colpg's schema is in place (no key needed: it reveals nothing else)."""
        try:
            with db.connect(database_url, connect_timeout=HEALTH_CONNECT_TIMEOUT_S) as conn:
                conn.execute(query("health_check"))
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName, SchemaError) as exc:
            reason = f"colpg's schema is missing, run `colpg db upgrade`: {str(exc).strip()}"
        except Exception as exc:
            unavailable = unavailable_reason(exc)
            if unavailable is None:
                raise
            reason = unavailable
        else:
            return Health(status="ok", database="ok", indexes_loaded=sorted(indexes))
        down = Health(status="unavailable", database=reason, indexes_loaded=sorted(indexes))
        return JSONResponse(down.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/indexes/{name}", dependencies=read, responses=UNAVAILABLE)
    def index_info(name: IndexName) -> dict[str, Any]:
        """Counts, bytes per token and table sizes of an index."""
        return index_named(name).info()

    @app.post("/indexes/{name}/encode", response_model=EncodeResponse, dependencies=read, responses=UNAVAILABLE)
    def encode(name: IndexName, request: EncodeRequest) -> EncodeResponse:
        """A text query's token vectors by the index's model, for SQL (colpg.candidates, search_approx, maxsim)."""
        return EncodeResponse(vectors=batcher(name).encode(request.query).tolist())

    @app.post("/indexes/{name}/search", response_model=SearchResponse, dependencies=read, responses=UNAVAILABLE)
    def search(name: IndexName, request: SearchRequest) -> SearchResponse:
        """The k best documents for a text query or for precomputed query vectors."""
        if (request.query is None) == (request.vectors is None):
            raise ConfigurationError("give exactly one of query (text) and vectors")
        index = index_named(name)
        where = Document.metadata_.contains(request.filter) if request.filter else None
        if request.query is not None:
            vectors = batcher(name).encode(request.query)
        else:
            vectors = unit_rows(request.vectors or [], index.record.dim)
        searcher = index.searcher
        if request.hybrid is not None:
            ranked = hybrid_search(searcher, request.query, vectors, request.k, request.hybrid.options(), where=where)
        else:
            ranked = searcher.search_vectors(vectors, request.k, where=where)
        found = hits(searcher.encoder, request.query, vectors, ranked, request.explain and request.query is not None)
        return SearchResponse(hits=found, index_status=searcher.status, warning=searcher.warning)

    @app.post("/indexes/{name}/rerank", response_model=RerankResponse, dependencies=read, responses=UNAVAILABLE)
    def rerank(name: IndexName, request: RerankRequest) -> RerankResponse:
        """Candidate documents of the index (from any first stage) ranked by exact MaxSim over their stored tokens;
        ids the index does not hold, or holds without tokens, are listed apart."""
        index = index_named(name)
        vectors = batcher(name).encode(request.query) if request.ids else None
        reranked = rerank_ids(index, request.query, request.ids, request.k, explain=request.explain, vectors=vectors)
        return RerankResponse(hits=reranked.hits, unknown=reranked.unknown, not_indexed=reranked.not_indexed)

    @app.post("/rerank", response_model=TextRerankResponse, dependencies=read, responses=UNAVAILABLE)
    def rerank_text(request: TextRerankRequest) -> TextRerankResponse:
        """Texts that are in no index ranked by MaxSim, encoded by the named index's model."""
        encoder = index_named(request.index).encoder
        return TextRerankResponse(hits=rerank_texts(request.query, request.texts, encoder, request.k, explain=request.explain))

    @app.post("/indexes/{name}/documents", response_model=Changed, status_code=201, dependencies=write, responses=UNAVAILABLE)
    def add_documents(name: IndexName, request: DocumentsIn) -> Changed:
        """Add documents (encoded and indexed before the response); an id already present is a 422, also when
        another request adds it at the same time."""
        return Changed(changed=index_named(name).add(_documents(request)))

    @app.put("/indexes/{name}/documents", response_model=Changed, dependencies=write, responses=UNAVAILABLE)
    def update_documents(name: IndexName, request: DocumentsIn) -> Changed:
        """Replace documents (text, metadata and tokens); an id the index does not hold is a 404."""
        return Changed(changed=index_named(name).update(_documents(request)))

    @app.delete("/indexes/{name}/documents/{external_id}", response_model=Changed, dependencies=write, responses=UNAVAILABLE)
    def delete_document(name: IndexName, external_id: Annotated[DocumentId, Path()]) -> Changed:
        """Delete one document by its id."""
        return Changed(changed=index_named(name).delete([external_id]))

    return app


def _documents(request: DocumentsIn) -> list[dict[str, Any]]:
    """The request's documents as colpg.collection reads them."""
    return [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in request.documents]


def unit_rows(rows: list[list[float]], dim: int) -> torch.Tensor:
    """Query vectors as the encoder gives them, each row of unit length, so every score is a finite number.

    Each row is first divided by its largest magnitude: squaring 3e38 overflows float32, 1e200 float64.
    """
    if any(len(row) != dim for row in rows):
        raise ConfigurationError(f"vectors must be rows of {dim} numbers (the index's dim), got rows of {sorted({len(r) for r in rows})}")
    vectors = torch.tensor(rows, dtype=torch.float64)
    scale = vectors.abs().amax(dim=1, keepdim=True)
    zero = (scale == 0).nonzero()
    if len(zero):
        raise ConfigurationError(f"vectors[{int(zero[0][0])}] is all zeros; a query vector needs a direction")
    vectors = vectors / scale
    return (vectors / vectors.norm(dim=1, keepdim=True)).to(torch.float32)
