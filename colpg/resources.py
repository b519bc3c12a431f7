"""Locate the SQL files and the Alembic environment, whether colpg runs from a checkout or a wheel.

The repository keeps ``sql/`` and ``migrations/`` at its top level; a built wheel carries
them as ``colpg/_data/sql`` and ``colpg/_data/migrations`` (see pyproject.toml).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["data_path", "query", "read_sql", "statements"]

# What a statement splitter must step over whole: quoted strings and names, dollar-quoted bodies, comments.
_SKIPPED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$[A-Za-z_]*\$).*?\1|--[^\n]*|/\*.*?\*/|;", re.DOTALL)

_PACKAGE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Return the folder ``name`` ("sql" or "migrations") from the wheel or the checkout."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"colpg's {name}/ folder is missing from {_PACKAGE}; reinstall colpg")


@functools.cache
def read_sql(filename: str) -> str:
    """Return the text of ``sql/<filename>`` (read once: search runs these on every query)."""
    path = data_path("sql") / filename
    if not path.is_file():
        raise FileNotFoundError(f"SQL file {filename!r} not found in {path.parent}")
    return path.read_text(encoding="utf-8")


def query(name: str) -> bytes:
    """The statement in ``sql/queries/<name>.sql``, ready for psycopg (values go as bound parameters)."""
    return read_sql(f"queries/{name}.sql").encode()


def statements(script: str) -> list[str]:
    """The statements of a SQL script, one by one (Citus forwards some DDL to its workers as the
    text it was given, which must then hold one statement).

    >>> statements("SELECT ';'; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$; -- done;")
    ["SELECT ';'", 'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$']
    """
    parts, start = [], 0
    for match in _SKIPPED.finditer(script):
        if match.group(0) == ";":
            parts.append(script[start : match.start()])
            start = match.end()
    parts.append(script[start:])
    return [text for part in parts if (text := part.strip()) and not _only_comments(text)]


def _only_comments(text: str) -> bool:
    return not _SKIPPED.sub(lambda m: "" if m.group(0).startswith(("--", "/*")) else m.group(0), text).strip()
