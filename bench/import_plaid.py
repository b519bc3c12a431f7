"""Import throughput of a Stanford ColBERT (PLAID) index: `colpg index import-colbert`'s machinery
(colpg.colbert_import.import_colbert) into an embedded server of its own (issue 16).

    cd bench && HF_HUB_OFFLINE=1 ../.venv/bin/python import_plaid.py [PATH] [--collection FILE] [--precision none|int8|fp16]

PATH defaults to the PLAID index compare.py leaves behind (NFCorpus's MiniLM token vectors, nbits
2; its collection is the passage numbers, so the documents are imported with their pids as ids
and no text). The server runs in a temporary COLPG_DATA_DIR, never the default one, or is the
one at --url (a new database there). The model that encodes queries is loaded before the clock
starts; the seconds are the import alone: reading the chunks, repacking the residuals, and
writing the rows into PostgreSQL with their indexes maintained. Peak RSS is this process's (not
the server's), model included.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from index import drop_database, fresh_database  # bench/index.py

from colpg import embedded
from colpg.colbert_import import import_colbert, read_folder
from colpg.encoder import Encoder

DEFAULT_INDEX = Path(__file__).resolve().parent / "results" / "colpg-plaid-7lenaekh" / "experiments" / "plaid" / "indexes" / "bench"


def measure(url: str, path: Path, collection: Path | None, precision: str) -> list[tuple[str, str]]:
    """The import's figures as (what, value) rows."""
    folder = read_folder(path)
    encoder = Encoder.from_pretrained(folder.config["checkpoint"], folder.encoder_settings)
    name, database = fresh_database(url)
    try:
        started = time.perf_counter()
        index = import_colbert("plaid", path, collection=collection, model=encoder, precision=precision, url=database)
        seconds = time.perf_counter() - started
        info = index.info()
        index.searcher.close()
    finally:
        drop_database(url, name)
    documents, tokens = info["documents"], info["tokens"]
    rows = [
        ("PLAID index", f"{path.name}: dim {info['dim']}, nbits {info['nbits']}, rerank store {info['precision']}"),
        ("documents", f"{documents:,}"),
        ("tokens", f"{tokens:,}"),
        ("seconds", f"{seconds:.1f}"),
        ("tokens/s", f"{tokens / seconds:,.0f}"),
        ("documents/s", f"{documents / seconds:,.0f}"),
        ("peak RSS (this process)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"),
    ]
    for table, size in sorted(info["tables"].items()):
        if size["total"]:
            rows.append((f"{table} bytes (heap + TOAST + indexes)", f"{size['total']:,} ({size['total'] / tokens:.1f} per token)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, nargs="?", default=DEFAULT_INDEX, help="a ColBERT index folder")
    parser.add_argument("--collection", type=Path, default=None, help="its collection file (default: ids are the pids, no text)")
    parser.add_argument("--precision", default="none", help="rerank store: none (the imported residuals), int8 or fp16")
    parser.add_argument("--url", default=None, help="a PostgreSQL server (default: an embedded one in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        pgdata = Path(scratch) / "pgdata"
        url = args.url or embedded.ensure_server(pgdata).url
        try:
            rows = measure(url, args.path.resolve(), args.collection, args.precision)
        finally:
            if not args.url:
                embedded.stop_server(pgdata)
    print("| import | |\n|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")


if __name__ == "__main__":
    main()
