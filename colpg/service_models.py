"""The HTTP service's request and response bodies, with every limit and rule on input declared here.

PostgreSQL's text and jsonb cannot hold NUL, UTF-8 cannot encode a lone surrogate (which JSON's
``\\ud800`` escapes produce), and Python's JSON parser reads ``1e400`` as infinity: each is refused
here, in every string and number a client sends (ids, texts, queries, metadata and filter values at
any depth, vectors), with a 422 that names the field, before it reaches the encoder or the database.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from colpg.constants import DEFAULT_FUSION, DEFAULT_MATCH, INDEX_NAME_PATTERN, Fusion, Match
from colpg.hybrid import MAX_CANDIDATES, Hybrid
from colpg.limits import (
    MAX_DOCUMENT_CHARS,
    MAX_DOCUMENTS_PER_REQUEST,
    MAX_ID_CHARS,
    MAX_METADATA_BYTES,
    MAX_QUERY_CHARS,
    MAX_QUERY_VECTORS,
    MAX_REQUEST_TEXT_CHARS,
    MAX_RERANK_IDS,
)
from colpg.reranking import TextHit
from colpg.search import Hit

__all__ = [
    "Changed",
    "DocumentId",
    "DocumentIn",
    "DocumentsIn",
    "EncodeRequest",
    "EncodeResponse",
    "Health",
    "HybridRequest",
    "RerankRequest",
    "RerankResponse",
    "SearchRequest",
    "SearchResponse",
    "TextRerankRequest",
    "TextRerankResponse",
    "checked_text",
]


def checked_text(value: str) -> str:
    """``value`` when PostgreSQL can store it as text; the error says which character it cannot."""
    if "\x00" in value:
        raise ValueError(f"contains a NUL character (\\u0000) at position {value.index(chr(0))}; PostgreSQL text cannot hold it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains a lone surrogate (\\u{ord(value[exc.start]):04x}) at position {exc.start}; UTF-8 cannot encode it"
        ) from None
    return value


def _checked_json(value: Any, where: str = "") -> Any:
    """Every string (keys too) storable, every number finite, at any depth; ``where`` is the path so far."""
    if isinstance(value, str):
        try:
            checked_text(value)
        except ValueError as exc:
            raise ValueError(f"{where or 'the value'} {exc}") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'the value'} is {value}; JSON numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            _checked_json(key, f"the key {key!r}" + (f" in {where}" if where else ""))
            _checked_json(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for number, item in enumerate(value):
            _checked_json(item, f"{where}[{number}]")
    return value


def _checked_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _checked_json(value)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata of {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
    return value


Text = Annotated[str, AfterValidator(checked_text)]
QueryText = Annotated[str, Field(max_length=MAX_QUERY_CHARS), AfterValidator(checked_text)]
DocumentId = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_CHARS, description="The document's own id."), AfterValidator(checked_text)
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
JsonScalar = str | int | float | bool | None


class HybridRequest(BaseModel):
    """Hybrid search over HTTP: colpg's and full-text candidates (an application's single-vector
    column is a first stage from Python and SQL only, colpg.hybrid.VectorSource)."""

    model_config = ConfigDict(extra="forbid")

    fulltext: int = Field(100, ge=0, le=MAX_CANDIDATES, description="Full-text candidates (ranked by ts_rank_cd); 0 for none.")
    colpg: int = Field(100, ge=0, le=MAX_CANDIDATES, description="colpg's own candidates; 0 for none.")
    fusion: Fusion = Field(DEFAULT_FUSION, description="Rank the union by reciprocal-rank fusion (rrf) of the lists, or by exact MaxSim.")
    match: Match = Field(
        DEFAULT_MATCH,
        description="Full-text documents with any of the query's words, or all of them (websearch syntax: quotes, or, -word).",
    )

    def options(self) -> Hybrid:
        return Hybrid(fulltext=self.fulltext, colpg=self.colpg, fusion=self.fusion, match=self.match)


class SearchRequest(BaseModel):
    """Text, or precomputed query vectors ([tokens][dim]), and what to return."""

    query: QueryText | None = Field(None, description="Query text; encoded by the index's model.")
    vectors: Annotated[list[list[FiniteFloat]], Field(min_length=1, max_length=MAX_QUERY_VECTORS)] | None = Field(
        None, description="Precomputed query token vectors instead of text; each row is scaled to unit length (cosine MaxSim)."
    )
    k: int = Field(10, ge=1, le=1000)
    filter: Annotated[dict[str, JsonScalar], AfterValidator(_checked_json)] | None = Field(
        None, description="Metadata filter: every key must hold exactly this value (JSON containment, metadata @> filter)."
    )
    explain: bool = Field(False, description="Per query token, the document token that matched it best (text queries).")
    hybrid: HybridRequest | None = Field(None, description="Union colpg's candidates with full-text ones (needs query text).")


class SearchResponse(BaseModel):
    hits: list[Hit]
    index_status: str = Field("ready", description="ready, or building while the index's first build is unfinished.")
    warning: str | None = Field(None, description="Why the hits may be partial (an index still being built); null otherwise.")


class EncodeRequest(BaseModel):
    query: QueryText = Field(..., description="Query text, encoded as search encodes it (cut to the model's query length).")


class EncodeResponse(BaseModel):
    vectors: list[list[float]] = Field(..., description="One vector per query token, for colpg's SQL functions (vector[]).")


class RerankRequest(BaseModel):
    """A query and the ids of candidate documents (from any first stage) to rank by MaxSim."""

    query: QueryText = Field(..., description="Query text; encoded by the index's model.")
    ids: list[DocumentId] = Field(
        ..., max_length=MAX_RERANK_IDS, description="Candidate document ids; an id given twice counts once, none gives no hits."
    )
    k: int | None = Field(None, ge=1, le=MAX_RERANK_IDS, description="Hits returned (default: every candidate scored).")
    explain: bool = Field(False, description="Per query token, the document token that matched it best.")


class RerankResponse(BaseModel):
    hits: list[Hit]
    unknown: list[str] = Field(..., description="Ids the index does not hold.")
    not_indexed: list[str] = Field(..., description="Documents without tokens: queued until a worker encodes their new text, or failed.")


class TextRerankRequest(BaseModel):
    """A query and texts that are in no index, encoded by the model of the index named (never a model the client names)."""

    model_config = ConfigDict(extra="forbid")

    query: QueryText = Field(..., description="Query text.")
    texts: list[Annotated[Text, Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)]] = Field(
        ...,
        max_length=MAX_DOCUMENTS_PER_REQUEST,
        description=f"Texts to rank, each encoded up to the model's position limit; at most {MAX_REQUEST_TEXT_CHARS} characters in all.",
    )
    index: str = Field(..., pattern=INDEX_NAME_PATTERN, description="The index whose model encodes the query and the texts.")
    k: int | None = Field(None, ge=1, le=MAX_DOCUMENTS_PER_REQUEST, description="Hits returned (default: every text).")
    explain: bool = Field(False, description="Per query token, the text token that matched it best.")

    @model_validator(mode="after")
    def _total_text(self) -> TextRerankRequest:
        total = sum(len(t) for t in self.texts)
        if total > MAX_REQUEST_TEXT_CHARS:
            raise ValueError(f"texts hold {total} characters in all; at most {MAX_REQUEST_TEXT_CHARS} per request")
        return self


class TextRerankResponse(BaseModel):
    hits: list[TextHit] = Field(..., description="Best first; position is the text's place in the request's list, from 0.")


class DocumentIn(BaseModel):
    id: DocumentId
    text: Annotated[Text, Field(max_length=MAX_DOCUMENT_CHARS, description="Must contain something to encode.")]
    metadata: Annotated[
        dict[str, Any],
        Field(default_factory=dict, description=f"Any JSON object of at most {MAX_METADATA_BYTES} bytes."),
        AfterValidator(_checked_metadata),
    ]


class DocumentsIn(BaseModel):
    documents: list[DocumentIn] = Field(
        ..., min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST, description=f"At most {MAX_REQUEST_TEXT_CHARS} characters of text in all."
    )

    @model_validator(mode="after")
    def _total_text(self) -> DocumentsIn:
        total = sum(len(d.text) for d in self.documents)
        if total > MAX_REQUEST_TEXT_CHARS:
            raise ValueError(f"documents hold {total} characters of text in all; at most {MAX_REQUEST_TEXT_CHARS} per request")
        return self


class Changed(BaseModel):
    changed: int


class Health(BaseModel):
    status: str = Field(..., description="ok, or unavailable (HTTP 503) when a dependency is down.")
    database: str = Field(..., description="ok, or why the database cannot be used.")
    indexes_loaded: list[str] = Field(default_factory=list)
