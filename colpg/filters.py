"""Search filters: a SQLAlchemy expression over colpg.orm.Document (and the caller's own
tables), or a SQL fragment over ``documents`` with its bound parameters. PostgreSQL applies
them; search only ever sees the ids they let through.

A fragment is trusted SQL: it runs as the connecting role, so it is for the application's
own conditions and never for text from its users (values go in as bound parameters). It is
parenthesised, so an ``OR`` in it stays within the index's own documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from colpg.errors import ConfigurationError
from colpg.orm import Document

__all__ = ["Where", "filtered_ids", "where_clause"]

#: A filter: a SQLAlchemy expression or ``(sql_fragment, parameters)``; None for none.
Where = sa.ColumnElement[bool] | tuple[str, Mapping[str, Any]] | None


def where_clause(where: Where) -> sa.ColumnElement[bool] | sa.TextClause | None:
    """The filter as a condition to add to a statement over colpg.orm.Document (None for none)."""
    if where is None or isinstance(where, sa.ColumnElement):
        return where
    if isinstance(where, tuple) and len(where) == 2 and isinstance(where[0], str) and isinstance(where[1], Mapping):
        clause = sa.text(where[0])
        named, given = set(clause.compile().params), set(where[1])
        if named != given:
            missing = ", ".join(f":{n}" for n in sorted(named - given))
            unused = ", ".join(sorted(given - named))
            problem = f"it uses {missing} with no value given" if missing else f"values were given for {unused}, which it does not use"
            raise ConfigurationError(f"the filter {where[0]!r} does not match its parameters: {problem} (CLI: --param NAME=VALUE)")
        # Parenthesised (the newline ends a trailing -- comment), so "a OR b" cannot escape the index's own condition.
        return sa.text(f"({where[0]}\n)").bindparams(**dict(where[1]))
    raise ConfigurationError(f"a filter must be a SQLAlchemy expression or a (sql_fragment, parameters) pair, got {type(where).__name__}")


def filtered_ids(
    connection: sa.Connection, index_id: int, where: Where, *, among: Sequence[int] | None = None, limit: int | None = None
) -> list[int]:
    """The ids of the index's documents that pass ``where`` (all of them without one), in id
    order; only ``among`` these when given, at most ``limit``."""
    stmt = sa.select(Document.id).where(Document.index_id == index_id).order_by(Document.id)
    clause = where_clause(where)
    if clause is not None:
        stmt = stmt.where(clause)
    if among is not None:
        stmt = stmt.where(Document.id == sa.any_(sa.bindparam("among", list(among), type_=ARRAY(sa.BigInteger))))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [row[0] for row in connection.execute(stmt)]
