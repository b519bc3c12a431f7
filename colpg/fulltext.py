"""The full-text stage of hybrid search: an index's text search configuration, and its best
documents for a query by PostgreSQL's own ranking.

Documents carry a stored ``tsvector`` (``colpg.documents.fulltext``, migration 0006) in their
index's text search configuration, with a GIN index. A query becomes a tsquery in SQL
(``colpg.fulltext_query``, migration 0007): ``match="all"`` is ``websearch_to_tsquery`` (every
word; quotes for phrases, ``or``, ``-`` to exclude: what users type into a search box, never a
syntax error), ``match="any"`` an OR of the query's lexemes, which suits natural-language
queries. Documents are ranked by ``ts_rank_cd``, as ``colpg.fulltext_candidates`` does in SQL;
here a search's ``where`` filter runs in the same statement.
"""

from __future__ import annotations

from typing import Any, get_args

import psycopg
import sqlalchemy as sa

from colpg.constants import DEFAULT_MATCH, Match
from colpg.errors import ConfigurationError
from colpg.filters import Where, where_clause
from colpg.orm import Document, IndexEntry
from colpg.resources import query

__all__ = ["check_language", "check_match", "fulltext_ids", "set_language"]


def check_language(conn: psycopg.Connection[Any], language: str) -> None:
    """Refuse a text search configuration the database does not have, naming those it has."""
    installed = [row[0] for row in conn.execute(query("text_search_configs")).fetchall()]
    if language not in installed:
        raise ConfigurationError(
            f"language must be a text search configuration installed in PostgreSQL ({', '.join(installed)}), got {language!r}"
        )


def set_language(conn: psycopg.Connection[Any], index_id: int, language: str) -> None:
    """Set a new index's text search configuration (checked by :func:`check_language`) before
    its documents are written: they copy it."""
    conn.execute(query("index_set_language"), {"index_id": index_id, "language": language})


def check_match(match: object) -> None:
    """Refuse a match mode colpg.fulltext_query does not know, before a query is encoded or sent."""
    if match not in get_args(Match):
        raise ConfigurationError(f"match must be one of {', '.join(get_args(Match))}, got {match!r}")


def fulltext_ids(
    connection: sa.Connection, index_id: int, text: str, k: int, where: Where = None, match: Match = DEFAULT_MATCH
) -> list[tuple[int, str]]:
    """The (document id, external id) of the index's ``k`` best documents for ``text`` that pass
    ``where``, best first (ts_rank_cd, ties by id), with ``match`` "any" or "all" of its words;
    none when the query has no searchable word."""
    check_match(match)
    config = sa.select(IndexEntry.text_search_config).where(IndexEntry.id == index_id).scalar_subquery()
    parsed = sa.func.colpg.fulltext_query(config, text, match)
    rank = sa.func.ts_rank_cd(Document.fulltext, parsed)
    stmt = (
        sa.select(Document.id, Document.external_id)
        .where(Document.index_id == index_id, Document.fulltext.bool_op("@@")(parsed))
        .order_by(rank.desc(), Document.id)
        .limit(k)
    )
    clause = where_clause(where)
    if clause is not None:
        stmt = stmt.where(clause)
    return [(row[0], row[1]) for row in connection.execute(stmt)]
