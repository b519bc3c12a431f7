"""``colpg db ...``: where the database is, its schema revision, migrations, the embedded server."""

from __future__ import annotations

import sqlalchemy as sa
import typer

from colpg import db, embedded
from colpg.cli.apps import db_app, reported_errors


def _revision_line(url: str) -> str:
    from colpg import migrate

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
    from colpg import migrate

    with reported_errors():
        url = db.database_url()
        migrate.upgrade(url, revision)
        typer.echo(f"colpg schema at revision {_revision_line(url)} on {db.describe_url(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision; 'base' removes colpg's tables.")) -> None:
    """Take colpg's schema back to an earlier revision."""
    from colpg import migrate

    with reported_errors():
        url = db.database_url()
        migrate.downgrade(url, revision)
        typer.echo(f"colpg schema at revision {_revision_line(url)} on {db.describe_url(url)}")


@db_app.command("status")
def db_status() -> None:
    """Show the server, its PostgreSQL and pgvector versions, colpg's schema revision, and Citus."""
    from colpg.distribute import describe

    with reported_errors():
        url = db.database_url()
        with db.connect(url, vector_types=False) as conn:
            info = db.server_info(conn)
            citus = describe(conn)
        pgvector = info.pgvector_installed and f"{info.pgvector_installed} installed"
        pgvector = pgvector or (info.pgvector_available and f"not installed ({info.pgvector_available} available)")
        rows = [
            ("server", f"PostgreSQL {info.server_version} at {info.where}"),
            ("embedded", f"yes, data folder {info.embedded_data_dir}" if info.embedded_data_dir else "no (COLPG_DATABASE_URL)"),
            ("pgvector", pgvector or "not available on this server"),
            ("schema", f"colpg revision {_revision_line(url)}"),
            ("citus", citus),
        ]
        for label, value in rows:
            typer.echo(f"{label:<10}{value}")


@db_app.command("url")
def db_url(show_password: bool = typer.Option(False, "--show-password", help="Print the password too.")) -> None:
    """Print the PostgreSQL URL colpg uses (for psql, or an application's own settings)."""
    with reported_errors():
        url = db.database_url()
        typer.echo(url if show_password else db.mask_url(url))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (it starts again on the next command that needs it)."""
    with reported_errors():
        folder = embedded.data_dir()
        stopped = embedded.stop_server(folder)
        typer.echo(f"embedded PostgreSQL in {folder} {'stopped' if stopped else 'was not running'}")


@db_app.command("distribute")
def db_distribute() -> None:
    """Distribute colpg's tables across a Citus cluster (run on the coordinator, after `colpg db upgrade`)."""
    from colpg.distribute import distribute

    with reported_errors():
        url = db.database_url()
        with db.connect(url, autocommit=True, vector_types=False) as conn:
            changed = distribute(conn)
        state = "distributed" if changed else "already distributed"
        typer.echo(
            f"colpg's tables {state} on {db.describe_url(url)}: documents and their tokens by document id, indexes and centroids as reference tables"
        )
