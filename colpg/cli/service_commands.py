"""``colpg worker`` and ``colpg serve``: the long-running processes."""

from __future__ import annotations

from pathlib import Path

import typer

from colpg import db
from colpg.cli.apps import app, reported_errors
from colpg.errors import ConfigurationError


@app.command("worker")
def worker(
    once: bool = typer.Option(False, "--once", help="Index what is queued now, then exit."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Documents claimed and committed together."),
    index: str | None = typer.Option(None, "--index", help="Only this index's documents."),
    poll: float = typer.Option(30.0, "--poll", min=0.1, help="Seconds between queue checks when no NOTIFY arrives."),
    max_failures: int | None = typer.Option(
        None, "--max-failures", min=1, help="Exit with status 1 after this many failed attempts in a row (default: retry forever)."
    ),
    health_file: Path | None = typer.Option(
        None, "--health-file", help="Touched after each pass over the queue: healthy while its mtime is younger than a few --poll periods."
    ),
) -> None:
    """Index documents that applications INSERT or UPDATE in colpg.documents with plain SQL.

    The worker waits out a server restart, a lost connection, a full disk or a read-only server: it logs a warning and retries with capped backoff, then goes on by itself.

    An index whose model folder cannot be loaded fails its own rows (status 'failed', with the reason) and the others go on; once it is fixed, requeue them with UPDATE colpg.documents SET status = 'queued' WHERE status = 'failed' AND index_name = '...'.
    """
    from colpg.worker import IngestWorker

    with reported_errors():
        ingest = IngestWorker(batch_size=batch_size, index_name=index, max_failures=max_failures, health_file=health_file)
        if once:
            typer.echo(f"settled {ingest.run_once()} queued documents")
        else:
            ingest.run_forever(poll)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    cache_bytes: int | None = typer.Option(
        None, "--cache-bytes", min=0, help="Bytes of rerank rows each index keeps in memory (default $COLPG_CACHE_BYTES, else 1 GiB)."
    ),
    max_body_bytes: int | None = typer.Option(
        None, "--max-body-bytes", min=1, help="Largest request body accepted (default $COLPG_MAX_BODY_BYTES, else 16 MiB)."
    ),
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        help="Serve without API keys ($COLPG_API_KEYS): anyone who reaches the port may change documents; loopback --host only.",
    ),
) -> None:
    """Serve search, documents and stats over HTTP (OpenAPI schema at /docs and /openapi.json).

    Clients send Authorization: Bearer KEY, a key from $COLPG_API_KEYS (read:KEY,write:KEY).
    """
    import uvicorn

    from colpg import auth
    from colpg.service import create_app

    with reported_errors():
        if no_auth:
            auth.check_anonymous_host(host)
        _check_port(host, port)  # uvicorn would announce startup before failing to bind
        app = create_app(cache_bytes=cache_bytes, anonymous=no_auth, max_body_bytes=max_body_bytes)  # keys checked first
        warning = auth.superuser_warning(db.database_url())
        if warning:
            typer.secho(f"WARNING: {warning}", fg=typer.colors.RED, bold=True, err=True)
        uvicorn.run(app, host=host, port=port)


def _check_port(host: str, port: int) -> None:
    """Fail before starting when ``host:port`` cannot be listened on (in use, or not this machine's address)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port") from exc
