"""Hybrid search: colpg's own candidates, PostgreSQL full-text candidates and, optionally, an
application's single-vector column, fused into one ranking.

Two stages, each in its own transaction:

1. **candidates** — up to three lists of documents, best first, named by external id:
   colpg's own search (its top ``colpg``, already exact MaxSim), the full-text top ``fulltext``
   (colpg.fulltext: any or all of the query's words in the index's configuration, ts_rank_cd), and
   the nearest ``k`` rows of a pgvector column (``VectorSource``: any table, column and id
   column, named by the caller and quoted as identifiers; the query's single vector is the
   caller's, since colpg's model makes token vectors). A ``where`` filter runs in the first two.
2. **rank** — the external ids are resolved to the documents the index holds now, the filter
   is applied to the union, and the union is ranked by reciprocal-rank fusion of the lists
   (``fusion="rrf"``, k=60 as in Cormack et al., 2009; the hits carry the RRF score) or by exact
   MaxSim over the stored tokens (``fusion="maxsim"``). RRF is the default: ranked by MaxSim, the
   union returns colpg's own ranking, since the other lists' documents score below its top; a
   single list keeps its own order under RRF, so reranking one source is ``fusion="maxsim"``.
   A document updated between the stages is ranked at its current tokens; one without tokens
   yet (queued for the worker) is not ranked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import psycopg
import torch
from psycopg import sql

from colpg.constants import DEFAULT_FUSION, DEFAULT_MATCH, Fusion, Match
from colpg.errors import ConfigurationError
from colpg.filters import Where, filtered_ids
from colpg.fulltext import check_match, fulltext_ids
from colpg.params import SearchParams
from colpg.resources import query as sql_query
from colpg.results import Ranked
from colpg.search import IndexSearcher

__all__ = ["MAX_CANDIDATES", "RRF_K", "Fusion", "Hybrid", "Match", "VectorSource", "hybrid_candidates", "hybrid_rank", "hybrid_search"]

Distance = Literal["cosine", "l2", "inner_product"]
#: pgvector's operator for each distance; the column's HNSW index must use the same one to serve the query.
OPERATORS: dict[str, str] = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}
#: The most candidates one source may give (as colpg.fulltext_candidates' limit on k).
MAX_CANDIDATES = 10_000
#: Reciprocal-rank fusion's constant: score = sum over lists of 1 / (RRF_K + rank).
RRF_K = 60


def _count(name: str, value: object, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= MAX_CANDIDATES:
        raise ConfigurationError(f"{name} must be an integer from {least} to {MAX_CANDIDATES}, got {value!r}")


@dataclass(frozen=True)
class VectorSource:
    """An application's single-vector column as a first stage: ``table.column`` (pgvector, with an
    HNSW index for ``distance``), whose ``id_column`` holds colpg's external id (``ids="external_id"``)
    or document id (``ids="document_id"``); its ``k`` nearest rows to ``query_vector``."""

    table: str
    column: str
    id_column: str
    query_vector: Sequence[float] | np.ndarray[Any, Any] | torch.Tensor
    k: int = 100
    schema: str | None = None
    ids: Literal["external_id", "document_id"] = "external_id"
    distance: Distance = "cosine"

    def __post_init__(self) -> None:
        _count("VectorSource.k", self.k, 1)
        if self.distance not in OPERATORS:
            raise ConfigurationError(f"distance must be one of {', '.join(OPERATORS)}, got {self.distance!r}")
        if self.ids not in ("external_id", "document_id"):
            raise ConfigurationError(f"ids must be external_id or document_id, got {self.ids!r}")
        for name in ("table", "column", "id_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigurationError(f"VectorSource.{name} must be a non-empty name, got {getattr(self, name)!r}")

    def statement(self) -> sql.Composed:
        """The nearest rows' ids, as text; every name quoted as an identifier."""
        table = sql.Identifier(self.schema, self.table) if self.schema else sql.Identifier(self.table)
        return sql.SQL("SELECT CAST({id} AS text) FROM {table} ORDER BY {column} {op} %(vector)s LIMIT %(k)s").format(
            id=sql.Identifier(self.id_column), table=table, column=sql.Identifier(self.column), op=sql.SQL(OPERATORS[self.distance])
        )

    def described(self) -> str:
        return ".".join(filter(None, (self.schema, self.table, self.column)))


@dataclass(frozen=True)
class Hybrid:
    """What a hybrid search unions (each count 0 for none), which full-text documents match
    (``match``: any or all of the query's words), and how it ranks the union."""

    fulltext: int = 100
    vector: VectorSource | None = None
    colpg: int = 100
    fusion: Fusion = DEFAULT_FUSION
    match: Match = DEFAULT_MATCH

    def __post_init__(self) -> None:
        _count("fulltext", self.fulltext, 0)
        _count("colpg", self.colpg, 0)
        check_match(self.match)
        if self.fusion not in get_args(Fusion):
            raise ConfigurationError(f"fusion must be one of {', '.join(get_args(Fusion))}, got {self.fusion!r}")
        if not self.fulltext and not self.colpg and self.vector is None:
            raise ConfigurationError("a hybrid search needs a source: fulltext or colpg above 0, or a vector source")


def _pg(connection: Any) -> psycopg.Connection[Any]:
    pg: psycopg.Connection[Any] = connection.connection.driver_connection
    return pg


def _vector_ids(pg: psycopg.Connection[Any], index_id: int, source: VectorSource) -> list[str]:
    """External ids of the source's nearest rows, best first (rows the index does not hold are left out)."""
    vector = np.asarray(source.query_vector.cpu() if isinstance(source.query_vector, torch.Tensor) else source.query_vector, np.float32)
    try:
        with pg.transaction():  # a savepoint: a bad source leaves the stage's transaction usable for the error
            found = [row[0] for row in pg.execute(source.statement(), {"vector": vector, "k": source.k}).fetchall()]
    except psycopg.Error as error:
        raise ConfigurationError(
            f"the vector source {source.described()!r} (ids in {source.id_column!r}) cannot be searched: expected a table with a"
            f" pgvector column of the query vector's size ({vector.shape[-1]}); PostgreSQL says: {str(error).strip()}"
        ) from error
    if source.ids == "external_id":
        return found
    ids = [int(i) for i in found if i.lstrip("-").isdigit()]
    names = dict(pg.execute(sql_query("documents_external_ids"), {"index_id": index_id, "ids": ids}).fetchall())
    return [names[i] for i in ids if i in names]


def hybrid_candidates(
    searcher: IndexSearcher,
    text: str | None,
    vectors: torch.Tensor,
    options: Hybrid,
    *,
    where: Where = None,
    params: SearchParams | None = None,
) -> dict[str, list[str]]:
    """Stage 1: each source's candidates (external ids, best first), by source name."""
    lists: dict[str, list[str]] = {}
    if options.colpg:
        ranked = searcher.search_vectors(vectors, options.colpg, where=where, params=params, text=False)
        lists["colpg"] = [r.external_id for r in ranked]
    index_id = searcher.loaded().record.id
    with searcher.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with connection.begin():
            if options.fulltext:
                if not text:
                    raise ConfigurationError("the full-text stage of a hybrid search needs the query's text, not only its vectors")
                found = fulltext_ids(connection, index_id, text, options.fulltext, where, options.match)
                lists["fulltext"] = [external for _, external in found]
            if options.vector is not None:
                lists["vector"] = _vector_ids(_pg(connection), index_id, options.vector)
    return lists


def hybrid_rank(
    searcher: IndexSearcher,
    vectors: torch.Tensor,
    lists: dict[str, list[str]],
    k: int,
    *,
    where: Where = None,
    fusion: Fusion = DEFAULT_FUSION,
) -> list[Ranked]:
    """Stage 2: the ``k`` best of the union of ``lists`` that the index holds now and that pass
    ``where``, by exact MaxSim or by reciprocal-rank fusion."""
    if k < 1:
        raise ConfigurationError(f"k must be positive, got {k}")
    wanted = list(dict.fromkeys(external for found in lists.values() for external in found))
    index_id = searcher.loaded().record.id
    with searcher.engine.connect() as connection, connection.begin():
        current = dict(
            _pg(connection).execute(sql_query("documents_current_ids"), {"index_id": index_id, "external_ids": wanted}).fetchall()
        )
        passing = set(filtered_ids(connection, index_id, where, among=list(current.values())))
    ids = {external: current[external] for external in wanted if current.get(external) in passing}
    if not ids:
        return []
    if fusion == "maxsim":
        return searcher.rank_candidates(vectors, list(ids.values()), k)
    fused: dict[str, float] = {}
    for found in lists.values():
        for rank, external in enumerate((e for e in found if e in ids), start=1):
            fused[external] = fused.get(external, 0.0) + 1.0 / (RRF_K + rank)
    best = sorted(fused, key=lambda e: -fused[e])[:k]
    scored = {r.document_id: r for r in searcher.rank_candidates(vectors, [ids[e] for e in best], len(best))}
    return [dataclasses.replace(scored[ids[e]], score=fused[e]) for e in best if ids[e] in scored]


def hybrid_search(
    searcher: IndexSearcher,
    text: str | None,
    vectors: torch.Tensor,
    k: int,
    options: Hybrid,
    *,
    where: Where = None,
    params: SearchParams | None = None,
) -> list[Ranked]:
    """Both stages: the ``k`` best documents of the union of the sources in ``options``."""
    lists = hybrid_candidates(searcher, text, vectors, options, where=where, params=params)
    return hybrid_rank(searcher, vectors, lists, k, where=where, fusion=options.fusion)
