"""Where colpg's PostgreSQL is and how to talk to it.

``COLPG_DATABASE_URL`` selects any PostgreSQL with pgvector >= 0.7; without it colpg uses
the embedded server (:mod:`colpg.embedded`). Connections come from psycopg 3 (one-off) or
SQLAlchemy (pooled), with pgvector's types registered on every connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import URL, make_url

from colpg import embedded
from colpg.errors import ConfigurationError, DatabaseUnavailable, SchemaError

__all__ = [
    "DATABASE_URL_ENV",
    "MIN_PGVECTOR",
    "ServerInfo",
    "connect",
    "create_engine",
    "database_url",
    "describe_url",
    "mask_url",
    "parse_version",
    "server_info",
    "sqlalchemy_url",
]

DATABASE_URL_ENV = "COLPG_DATABASE_URL"
MIN_PGVECTOR = (0, 7, 0)
CONNECT_TIMEOUT_S = 10
#: Connection parameters that hold secrets, masked wherever a URL is shown.
SECRET_PARAMS = frozenset({"password", "sslpassword"})
MASK = "***"


def database_url() -> str:
    """The libpq URL colpg uses: ``$COLPG_DATABASE_URL``, else the embedded server's (started if needed)."""
    configured = os.environ.get(DATABASE_URL_ENV, "").strip()
    if configured:
        return _libpq_url(configured)
    return embedded.ensure_server().url


def _libpq_url(url: str) -> str:
    """Accept SQLAlchemy spellings (``postgresql+psycopg://``) and return a libpq URL."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            f"{DATABASE_URL_ENV} must be a URL such as postgresql://user:password@host:5432/dbname, got {mask_url(url)!r}"
        ) from exc
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"{DATABASE_URL_ENV} must point at PostgreSQL, got a {parsed.get_backend_name()!r} URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str | None = None) -> URL:
    """The SQLAlchemy URL (psycopg 3 driver) for ``url`` or :func:`database_url`."""
    return make_url(_libpq_url(url or database_url())).set(drivername="postgresql+psycopg")


def mask_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``: the password in the user part or in the
    query string, in a URL or a keyword DSN; something that parses as neither is not shown.

    >>> mask_url("postgresql://app:s3cret@db/colpg?sslmode=require&password=s3cret")
    'postgresql://app:***@db/colpg?password=%2A%2A%2A&sslmode=require'
    >>> mask_url("host=db password=s3cret dbname=colpg")
    'password=*** dbname=colpg host=db'
    >>> mask_url("postgresql://postgres:@/postgres?host=/run/pg")
    'postgresql://postgres:@/postgres?host=%2Frun%2Fpg'
    >>> mask_url("app:s3cret@db")
    '<not shown: neither a URL nor a keyword DSN>'
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            return "<not shown: neither a URL nor a keyword DSN>"
        return make_conninfo("", **{key: MASK if key in SECRET_PARAMS else value for key, value in params.items()})
    query = {key: MASK if key in SECRET_PARAMS else value for key, value in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=bool(parsed.password))  # an empty one stays empty


def describe_url(url: str) -> str:
    """A password-free description of where ``url`` points, for messages and logs."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable URL>"
    return _where(params)


def _where(params: Mapping[str, Any]) -> str:
    host = str(params.get("host") or "localhost")
    place = f"socket {host}" if host.startswith("/") else host
    return f"{place} port {params.get('port') or 5432} database {params.get('dbname') or params.get('user') or '?'}"


def _register_vector(conn: psycopg.Connection[Any]) -> None:
    try:
        register_vector(conn)
    except psycopg.ProgrammingError as exc:
        raise SchemaError(f"the pgvector extension is not installed in database {conn.info.dbname!r}; run `colpg db upgrade`") from exc


def connect(
    url: str | None = None, *, autocommit: bool = False, vector_types: bool = True, connect_timeout: int = CONNECT_TIMEOUT_S
) -> psycopg.Connection[Any]:
    """Open one psycopg connection, waiting at most ``connect_timeout`` seconds (libpq's minimum is 2).

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses the login.
        SchemaError: ``vector_types`` is set and the database has no pgvector extension.
    """
    url = url or database_url()
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {describe_url(url)}: {reason}") from exc
    if vector_types:
        try:
            _register_vector(conn)
        except SchemaError:
            conn.close()
            raise
    return conn


def create_engine(url: str | None = None, *, vector_types: bool = True, **kwargs: Any) -> sa.Engine:
    """A SQLAlchemy engine on psycopg 3; ``vector_types`` registers pgvector on each connection.

    Registration is what lets ``ARRAY(Vector)`` columns read back; migrations that create the
    extension pass ``vector_types=False``. Pooled connections are pinged before use, so a
    server restart costs the requests made while it is down and none after.
    """
    kwargs.setdefault("pool_pre_ping", True)
    engine = sa.create_engine(sqlalchemy_url(url), connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, **kwargs)
    if vector_types:

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: psycopg.Connection[Any], _record: Any) -> None:
            _register_vector(dbapi_connection)

    return engine


@dataclass(frozen=True)
class ServerInfo:
    """What ``colpg db status`` reports about a server."""

    where: str
    embedded_data_dir: str | None
    server_version: str
    pgvector_available: str | None
    pgvector_installed: str | None


def server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    """Versions of the server and of pgvector (available to install, and installed)."""
    row = conn.execute(
        """
        SELECT current_setting('server_version'),
               (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'),
               (SELECT extversion FROM pg_extension WHERE extname = 'vector')
        """
    ).fetchone()
    assert row is not None  # a SELECT without FROM always returns one row
    configured = bool(os.environ.get(DATABASE_URL_ENV, "").strip())
    return ServerInfo(
        where=_where({"host": conn.info.host, "port": conn.info.port, "dbname": conn.info.dbname}),
        embedded_data_dir=None if configured else str(embedded.data_dir()),
        server_version=row[0],
        pgvector_available=row[1],
        pgvector_installed=row[2],
    )


def parse_version(version: str) -> tuple[int, ...]:
    """``"0.8.6"`` -> ``(0, 8, 6)``; non-numeric suffixes are ignored."""
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
