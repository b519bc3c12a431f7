"""The ``colpg`` command line, for people who never write Python.

The library logs and raises; only this module prints. Every colpg error ends the command
with a one-paragraph message on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import alembic.util
import psycopg
import sqlalchemy as sa
import typer
from sqlalchemy.engine import make_url

from colpg import db, embedded, migrate
from colpg.errors import ColpgError

__all__ = ["app"]

app = typer.Typer(help="ColBERT late-interaction retrieval inside PostgreSQL.", no_args_is_help=True)
db_app = typer.Typer(help="The database: where it is, its schema revision, migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what colpg does.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@contextlib.contextmanager
def _reported_errors() -> Iterator[None]:
    """Turn expected failures into a message and exit status 1 instead of a traceback."""
    try:
        yield
    except ColpgError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except alembic.util.CommandError as exc:
        typer.secho(f"error: migration: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except (psycopg.Error, sa.exc.DBAPIError) as exc:
        typer.secho(f"error: the database refused: {str(exc).strip()}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


def _revision_line(url: str) -> str:
    engine = db.create_engine(url, vector_types=False, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            current = migrate.current_revision(connection)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if current is None:
        return f"not installed (head {head}); run `colpg db upgrade`"
    state = "up to date" if current == head else "behind; run `colpg db upgrade`"
    return f"{current} (head {head}, {state})"


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Option("head", help="Target revision.")) -> None:
    """Create or upgrade colpg's schema (and the pgvector extension)."""
    with _reported_errors():
        url = db.database_url()
        migrate.upgrade(url, revision)
        typer.echo(f"colpg schema at revision {_revision_line(url)} on {db.describe_url(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision; 'base' removes colpg's tables.")) -> None:
    """Take colpg's schema back to an earlier revision."""
    with _reported_errors():
        url = db.database_url()
        migrate.downgrade(url, revision)
        typer.echo(f"colpg schema at revision {_revision_line(url)} on {db.describe_url(url)}")


@db_app.command("status")
def db_status() -> None:
    """Show the server, its PostgreSQL and pgvector versions, and colpg's schema revision."""
    with _reported_errors():
        url = db.database_url()
        with db.connect(url, vector_types=False) as conn:
            info = db.server_info(conn)
        pgvector = info.pgvector_installed and f"{info.pgvector_installed} installed"
        pgvector = pgvector or (info.pgvector_available and f"not installed ({info.pgvector_available} available)")
        rows = [
            ("server", f"PostgreSQL {info.server_version} at {info.where}"),
            ("embedded", f"yes, data folder {info.embedded_data_dir}" if info.embedded_data_dir else "no (COLPG_DATABASE_URL)"),
            ("pgvector", pgvector or "not available on this server"),
            ("schema", f"colpg revision {_revision_line(url)}"),
        ]
        for label, value in rows:
            typer.echo(f"{label:<10}{value}")


@db_app.command("url")
def db_url(show_password: bool = typer.Option(False, "--show-password", help="Print the password too.")) -> None:
    """Print the PostgreSQL URL colpg uses (for psql, or an application's own settings)."""
    with _reported_errors():
        url = db.database_url()
        has_password = bool(make_url(url).password)
        typer.echo(make_url(url).render_as_string(hide_password=True) if has_password and not show_password else url)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (it starts again on the next command that needs it)."""
    with _reported_errors():
        folder = embedded.data_dir()
        stopped = embedded.stop_server(folder)
        typer.echo(f"embedded PostgreSQL in {folder} {'stopped' if stopped else 'was not running'}")
