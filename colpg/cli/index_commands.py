"""``colpg index ...``: build, import, change, list, inspect and drop indexes."""

from __future__ import annotations

from pathlib import Path

import typer

from colpg.cli.apps import index_app, reported_errors


def _mib(count: float) -> str:
    return f"{count / 2**20:,.1f} MiB"


@index_app.command("create")
def index_create(
    name: str = typer.Argument(..., help="Name of the new index."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint folder (or a cached hub id); with --vectors, it encodes queries."),
    collection: Path | None = typer.Option(
        None, "--collection", "-c", exists=True, dir_okay=False, help="corpus.jsonl, id<TAB>text .tsv, or one document per line."
    ),
    vectors: Path | None = typer.Option(
        None,
        "--vectors",
        exists=True,
        file_okay=False,
        help="A folder of precomputed token vectors (NAME.tokens.npy, NAME.doclens.npy, NAME.ids.txt per shard) instead of a collection.",
    ),
    nbits: int = typer.Option(2, help="Residual bits per dimension: 1, 2 or 4."),
    precision: str = typer.Option("int8", help="Rerank store: none, residual4, int8 or fp16."),
    doc_maxlen: int | None = typer.Option(None, help="Tokens kept per document (default: the checkpoint's)."),
    language: str | None = typer.Option(
        None, help="Text search configuration of the full-text column (any installed in PostgreSQL; default english)."
    ),
    max_sample_tokens: int | None = typer.Option(
        None, help="With --vectors: most tokens in the k-means sample (default: MAX_SAMPLE_TOKENS in colpg/vector_build.py)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an index of the same name."),
) -> None:
    """Build an index of a collection, or of precomputed vectors (an interrupted build resumes when run again)."""
    from colpg.errors import ConfigurationError
    from colpg.indexer import IndexConfig, Indexer

    with reported_errors():
        if (collection is None) == (vectors is None):
            found = "both" if collection is not None else "neither"
            raise ConfigurationError(f"give --collection FILE or --vectors FOLDER, exactly one; found {found}")
        config = IndexConfig(nbits=nbits, precision=precision, doc_maxlen=doc_maxlen, language=language)
        if vectors is not None:
            from colpg.vector_build import MAX_SAMPLE_TOKENS, VectorIndexer

            builder = VectorIndexer(model, config, max_sample_tokens=max_sample_tokens or MAX_SAMPLE_TOKENS)
            index = builder.index(name, vectors, overwrite=overwrite)
            stats = builder.stats
            typer.echo(
                f"indexed {stats.documents} documents ({stats.tokens} tokens) into {index.name!r}:"
                f" k-means {stats.train_s:.1f} s, writing {stats.write_s:.1f} s"
            )
            return
        if max_sample_tokens is not None:
            raise ConfigurationError("--max-sample-tokens applies to --vectors builds only")
        assert collection is not None  # exactly one of the two
        indexer = Indexer(model, config)
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

    with reported_errors():
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

    with reported_errors():
        index = Index(name)
        documents = read_collection(collection)
        count = index.update(documents) if update else index.add(documents)
        typer.echo(f"{'updated' if update else 'added'} {count} documents in {name!r}")


@index_app.command("delete")
def index_delete(name: str, ids: list[str] = typer.Argument(..., help="External ids of the documents.")) -> None:
    """Delete documents from an index by id."""
    from colpg.index import Index

    with reported_errors():
        count = Index(name).delete(ids)
        typer.echo(f"deleted {count} documents from {name!r}")


@index_app.command("drop")
def index_drop(name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Remove an index with all its documents."""
    from colpg.index import Index, drop_index

    with reported_errors():
        if not yes:
            documents = Index(name).info()["documents"]  # an unknown name fails here, before the question
            typer.confirm(f"drop index {name!r} and its {documents} documents?", abort=True)
        drop_index(name)
        typer.echo(f"dropped {name!r}")


@index_app.command("list")
def index_list() -> None:
    """List the indexes in the database."""
    from colpg.index import list_indexes

    with reported_errors():
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

    with reported_errors():
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
