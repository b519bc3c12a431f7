"""SQLAlchemy 2 typed models of the ``colpg`` schema.

They mirror ``sql/*.sql`` as applied by the Alembic migrations (a test compares the two);
the migrations, not ``create_all``, create the tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB, REAL, REGCONFIG, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import UserDefinedType

from colpg.constants import DEFAULT_MATCH, INDEX_NAME_PATTERN, NBITS, Match
from colpg.errors import ConfigurationError

__all__ = [
    "SCHEMA",
    "Base",
    "Centroid",
    "Document",
    "DocumentTokens",
    "IndexEntry",
    "RerankVectors",
    "fulltext_stmt",
    "rerank",
    "search",
    "search_stmt",
    "token_changes",
    "token_changes_trimmed",
]

SCHEMA = "colpg"


class Base(DeclarativeBase):
    """Declarative base of colpg's tables, all in the ``colpg`` schema."""

    metadata = sa.MetaData(
        schema=SCHEMA,
        # PostgreSQL's own default names, so the models and the SQL files name constraints alike.
        naming_convention={
            "pk": "%(table_name)s_pkey",
            "uq": "%(table_name)s_%(column_0_N_name)s_key",
            "fk": "%(table_name)s_%(column_0_name)s_fkey",
            "ix": "%(table_name)s_%(column_0_N_name)s_idx",
        },
    )


def _created_at() -> Mapped[dt.datetime]:
    return mapped_column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _updated_at() -> Mapped[dt.datetime]:
    """Kept current by the ``touch_updated_at`` trigger."""
    return mapped_column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


class IndexEntry(Base):
    """A colpg index's catalogue row: the model it was built with, its vector size, residual bits and codec.

    (Not :class:`colpg.index.Index`, which builds and searches one.)
    """

    __tablename__ = "indexes"
    __table_args__ = (
        sa.CheckConstraint(f"name ~ '{INDEX_NAME_PATTERN}'", name="indexes_name_check"),
        sa.CheckConstraint("dim BETWEEN 1 AND 16000", name="indexes_dim_check"),
        sa.CheckConstraint(f"nbits IN ({', '.join(map(str, NBITS))})", name="indexes_nbits_check"),
        sa.CheckConstraint("status IN ('building', 'ready')", name="indexes_status_check"),
        {"comment": "One row per colpg index: model, vector size, residual bits, ColBERT settings and the residual codec buckets."},
    )

    id: Mapped[int] = mapped_column(sa.Integer, sa.Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text, nullable=False, unique=True)
    model: Mapped[str] = mapped_column(sa.Text, nullable=False, comment="Checkpoint the index was built with (folder path or hub id).")
    dim: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    nbits: Mapped[int] = mapped_column(sa.SmallInteger, nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(
        JSONB,
        nullable=False,
        server_default=sa.text("'{}'::jsonb"),
        comment="ColBERT and build settings (query_maxlen, doc_maxlen, markers, k-means, precision store).",
    )
    status: Mapped[str] = mapped_column(
        sa.Text,
        nullable=False,
        server_default=sa.text("'building'::text"),
        comment="building until every document of the initial build is written, then ready.",
    )
    bucket_cutoffs: Mapped[list[float] | None] = mapped_column(
        ARRAY(REAL, dimensions=1),
        comment="Residual quantisation cutoffs, dim x (2^nbits - 1) values, row-major; NULL until the codec is trained.",
    )
    bucket_weights: Mapped[list[float] | None] = mapped_column(
        ARRAY(REAL, dimensions=1),
        comment="Residual bucket values, dim x 2^nbits values, row-major; NULL until the codec is trained.",
    )
    rerank_codec: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB,
        comment="Parameters of the rerank-precision store (kind, int8 scales or 4-bit buckets); NULL for none.",
    )
    padding: Mapped[list[float] | None] = mapped_column(
        ARRAY(REAL, dimensions=1),
        comment="The encoder's query padding direction, dim values; NULL where not known.",
    )
    text_search_config: Mapped[str] = mapped_column(
        REGCONFIG,
        nullable=False,
        server_default=sa.text("'english'::regconfig"),
        comment="Text search configuration of the index's full-text column (documents.fulltext); set when the index is built.",
    )
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = _updated_at()

    centroids: Mapped[list[Centroid]] = relationship(
        back_populates="index", cascade="all, delete-orphan", passive_deletes=True, order_by="Centroid.code"
    )
    documents: Mapped[list[Document]] = relationship(
        back_populates="index", cascade="all, delete-orphan", passive_deletes=True, lazy="raise_on_sql"
    )


class Centroid(Base):
    """One k-means centroid of an index; ``code`` is what tokens store."""

    __tablename__ = "centroids"
    __table_args__ = (
        sa.CheckConstraint("code >= 0", name="centroids_code_check"),
        {"comment": "k-means centroids of an index's token vectors; a token's code is its nearest centroid."},
    )

    index_id: Mapped[int] = mapped_column(
        sa.ForeignKey(IndexEntry.id, ondelete="CASCADE", name="centroids_index_id_fkey"), primary_key=True
    )
    code: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    centroid: Mapped[list[float]] = mapped_column(Vector(), nullable=False)

    index: Mapped[IndexEntry] = relationship(back_populates="centroids")


class Document(Base):
    """A document of an index, under the application's own ``external_id``."""

    __tablename__ = "documents"
    __table_args__ = (
        sa.UniqueConstraint("index_id", "external_id", name="documents_index_id_external_id_key"),
        # The target of document_tokens' (document_id, index_id) foreign key.
        sa.UniqueConstraint("id", "index_id", name="documents_id_index_id_key"),
        sa.CheckConstraint("status IN ('queued', 'ready', 'failed')", name="documents_status_check"),
        sa.Index("documents_queued_idx", "id", postgresql_where=sa.text("status = 'queued'")),
        sa.Index("documents_fulltext_idx", "fulltext", postgresql_using="gin"),
        {"comment": "Documents of each index: the application's id, optional text and metadata."},
    )

    # ALWAYS: ids come from the sequence only; bulk writes reserve them by nextval and COPY them in.
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(always=True), primary_key=True)
    index_id: Mapped[int] = mapped_column(sa.ForeignKey(IndexEntry.id, ondelete="CASCADE", name="documents_index_id_fkey"), nullable=False)
    external_id: Mapped[str] = mapped_column(sa.Text, nullable=False)
    text: Mapped[str | None] = mapped_column(sa.Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _created_at()
    updated_at: Mapped[dt.datetime] = _updated_at()
    index_name: Mapped[str] = mapped_column(
        sa.Text,
        nullable=False,
        server_default=sa.FetchedValue(),  # the documents_before_write trigger fills it in
        comment="The index's name: give it (or index_id) on INSERT, the other is filled in.",
    )
    status: Mapped[str] = mapped_column(
        sa.Text,
        nullable=False,
        server_default=sa.text("'queued'"),
        comment="queued until a worker has encoded the text, then ready; failed (with error) if it cannot be indexed.",
    )
    error: Mapped[str | None] = mapped_column(sa.Text, comment="Why indexing failed; NULL otherwise.")
    text_search_config: Mapped[str] = mapped_column(
        REGCONFIG,
        nullable=False,
        server_default=sa.FetchedValue(),  # the index's, copied by the documents_before_write trigger
        comment="The index's text search configuration, copied by the documents_before_write trigger (so fulltext is immutable).",
    )
    fulltext: Mapped[str | None] = mapped_column(
        TSVECTOR,
        sa.Computed("to_tsvector(text_search_config, text)", persisted=True),
        comment="The text's lexemes in the index's text search configuration (NULL without text).",
    )

    index: Mapped[IndexEntry] = relationship(back_populates="documents")
    tokens: Mapped[DocumentTokens | None] = relationship(back_populates="document", cascade="all, delete-orphan", passive_deletes=True)
    rerank: Mapped[RerankVectors | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class DocumentTokens(Base):
    """A document's tokens: one centroid code each and the packed residuals (dim*nbits/8 bytes each)."""

    __tablename__ = "document_tokens"
    __table_args__ = (
        sa.CheckConstraint("ntokens > 0 AND cardinality(codes) = ntokens", name="document_tokens_ntokens_check"),
        sa.ForeignKeyConstraint(
            ["document_id", "index_id"],
            [Document.id, Document.index_id],
            ondelete="CASCADE",
            name="document_tokens_document_id_index_id_fkey",
        ),
        sa.Index("document_tokens_codes_idx", "codes", postgresql_using="gin", postgresql_with={"fastupdate": "off"}),
        {"comment": "Per document: one centroid code per token and the tokens' residuals packed to dim*nbits/8 bytes each."},
    )

    document_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    ntokens: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    codes: Mapped[list[int]] = mapped_column(ARRAY(sa.Integer, dimensions=1), nullable=False)
    residuals: Mapped[bytes] = mapped_column(BYTEA, nullable=False)
    padding_gap: Mapped[float] = mapped_column(
        REAL,
        nullable=False,
        server_default=sa.text("0"),
        comment="Best exact similarity of the tokens with indexes.padding less the best their codes and residuals score.",
    )
    index_id: Mapped[int] = mapped_column(
        sa.Integer,
        nullable=False,
        comment="The document's index (equal to documents.index_id by the foreign key), so candidate lookup needs no join.",
    )

    document: Mapped[Document] = relationship(back_populates="tokens")


class RerankVectors(Base):
    """A document's tokens at rerank precision: int8 or 4-bit residuals (``payload``), or fp16 ``vectors``."""

    __tablename__ = "rerank_vectors"
    __table_args__ = (
        sa.CheckConstraint("payload IS NOT NULL OR vectors IS NOT NULL", name="rerank_vectors_payload_check"),
        {"comment": "Rerank-precision store: per document, int8 or 4-bit-residual tokens (payload) or fp16 vectors."},
    )

    document_id: Mapped[int] = mapped_column(
        sa.ForeignKey(Document.id, ondelete="CASCADE", name="rerank_vectors_document_id_fkey"), primary_key=True
    )
    payload: Mapped[bytes | None] = mapped_column(BYTEA)
    vectors: Mapped[list[Any] | None] = mapped_column(ARRAY(HALFVEC(), dimensions=1))


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


#: Documents whose token rows changed, with the writing transaction (written by a trigger; read
#: by searchers to keep their resident tokens current). No key: a document may appear repeatedly.
token_changes = sa.Table(
    "token_changes",
    Base.metadata,
    sa.Column("index_id", sa.Integer, nullable=False),
    sa.Column("document_id", sa.BigInteger, nullable=False),
    sa.Column("xid", Xid8(), nullable=False, server_default=sa.text("pg_current_xact_id()")),
    sa.Index("token_changes_index_id_xid_idx", "index_id", "xid"),
    comment="Documents whose token rows changed, with the writing transaction: how searchers keep their resident tokens current.",
)

#: Per index, the newest transaction whose token_changes rows were trimmed.
token_changes_trimmed = sa.Table(
    "token_changes_trimmed",
    Base.metadata,
    sa.Column("index_id", sa.Integer, primary_key=True),
    sa.Column("horizon", Xid8(), nullable=False),
    sa.Column(
        "trims",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="How many times the index's log was trimmed (searchers on a Citus cluster reload after a trim).",
    ),
    comment="Per index, the newest transaction whose token_changes rows were trimmed.",
)


def search_stmt(index_name: str, query_vectors: Any, *, ncells: int = 8) -> sa.Select[tuple[Document, int]]:
    """Search stage 1 as a statement: the index's candidate documents for ``query_vectors``
    (``colpg.candidates``), with their token rows' versions.

    Add joins to your own tables, filters and ordering as to any Select, then rank the
    candidates with :func:`search`. ``query_vectors``: a [tokens, dim] tensor or array.
    """
    vectors = [np.asarray(row, dtype=np.float32) for row in np.asarray(query_vectors, dtype=np.float32)]
    candidates = (
        sa.func.colpg.candidates(index_name, sa.bindparam("query_vectors", vectors, type_=ARRAY(Vector(), dimensions=1)), ncells)
        .table_valued(sa.column("document_id", sa.BigInteger), sa.column("version", sa.BigInteger))
        .alias("candidates")
    )
    return sa.select(Document, candidates.c.version).join(candidates, Document.id == candidates.c.document_id)


def fulltext_stmt(index_name: str, query: str, k: int = 100, match: Match = DEFAULT_MATCH) -> sa.Select[tuple[Document, float]]:
    """Full-text candidates as a statement: the index's ``k`` best documents for ``query`` by
    ``colpg.fulltext_candidates`` (``match`` "any" or "all" of its words in the index's language,
    ts_rank_cd), best first.

    Join and filter it like any Select, then rank it by MaxSim with :func:`rerank` (hybrid search
    from the ORM: full-text first stage, ColBERT second).
    """
    candidates = (
        sa.func.colpg.fulltext_candidates(index_name, query, k, match)
        .table_valued(sa.column("document_id", sa.BigInteger), sa.column("rank", REAL))
        .alias("fulltext")
    )
    return (
        sa.select(Document, candidates.c.rank)
        .join(candidates, Document.id == candidates.c.document_id)
        .order_by(candidates.c.rank.desc(), Document.id)
    )


def search(session: Session, stmt: sa.Select[Any], index: Any, query: str, k: int = 10) -> list[tuple[Document, float]]:
    """Run a :func:`search_stmt` statement in ``session`` and rank its candidates by MaxSim.

    ``index`` is the :class:`colpg.index.Index` searched; returns the best ``k`` documents
    (ORM objects of the session) with their scores, best first.
    """
    rows = session.execute(stmt).all()
    documents = {row[0].id: row[0] for row in rows}
    versions = {row[0].id: row[1] for row in rows}  # once each, even if a join repeats a document
    vectors = index.encoder.encode_queries([query])[0]
    ranked = index.searcher.rank_candidates(vectors, list(versions), k)
    return [(documents[r.document_id], r.score) for r in ranked]


def rerank(session: Session, stmt: sa.Select[Any], index: Any, query: str, k: int | None = None) -> list[tuple[Document, float]]:
    """Rank the documents an application's own select returns (its first column a :class:`Document`)
    by exact MaxSim over their stored tokens: the best ``k`` (all when None), best first.

    ``index`` is the :class:`colpg.index.Index` whose documents are reranked; the select's documents
    of other indexes, and those without tokens (queued, failed), are not in the result.
    """
    from colpg.reranking import checked_k, rank_exactly  # colpg.reranking imports search, which imports this module

    documents: dict[int, Document] = {}
    for row in session.execute(stmt):
        if not isinstance(row[0], Document):
            raise ConfigurationError(f"the select's first column must be colpg.orm.Document, got {type(row[0]).__name__}")
        if row[0].index_name == index.name:
            documents[row[0].id] = row[0]
    count = checked_k(k, len(documents))
    vectors = index.encoder.encode_queries([query])[0]
    ranked = rank_exactly(index.searcher, vectors, list(documents), count)
    return [(documents[r.document_id], r.score) for r in ranked]
