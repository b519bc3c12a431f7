"""Search latency and throughput on a built index.

    .venv/bin/python bench/search.py --index scifact [--dataset ../shared/data/scifact] [--k 10] [--clients 4]

p50/p95 per query, split into query encoding and colpg.search's stages: sync (the index row
and the token-change log, in the search's snapshot), probe (probed-token scores over the
resident tokens), filter, rerank (exact MaxSim of the nrerank best, rows from the row cache
or PostgreSQL) and rows (the results' rows); then queries per second with N concurrent
clients sharing one Index (its connection pool, resident tokens and row cache). The resident
tokens are loaded and the row cache filled before timing, as a long-running service's would be.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from colpg.evaluate import read_queries
from colpg.index import Index
from colpg.params import default_params

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--ncells", type=int)
    parser.add_argument("--nrerank", type=int)
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)

    index = Index(args.index)
    texts = list(read_queries(args.dataset / "queries.jsonl").values())[: args.queries]
    searcher = index.searcher
    params = default_params(args.k).replace(ncells=args.ncells, nrerank=args.nrerank)
    started = time.perf_counter()
    searcher.warm(rows=True, progress=False)
    warm_seconds = time.perf_counter() - started
    index.search(texts[0], args.k)  # warm-up: model, pool, device

    names = ("sync", "probe", "filter", "rerank", "rows")
    stages: dict[str, list[float]] = {"encode": [], **{name: [] for name in names}, "total excl. encoding": []}
    for text in texts:
        started = time.perf_counter()
        vectors = index.encoder.encode_queries([text])[0]
        stages["encode"].append(time.perf_counter() - started)
        started = time.perf_counter()
        searcher.search_vectors(vectors, args.k, params=params)
        stages["total excl. encoding"].append(time.perf_counter() - started)
        for stage in names:
            stages[stage].append(searcher.timings.get(stage, 0.0))

    def one(text: str) -> None:
        index.search(text, args.k, ncells=params.ncells, nrerank=params.nrerank)

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(one, texts))
    qps = len(texts) / (time.perf_counter() - started)

    info = index.info()
    print(f"index {args.index}: {info['documents']} documents, {info['tokens']} tokens, nbits {info['nbits']},"
          f" precision {info['precision']}; {len(texts)} queries, k={args.k}; device {index.encoder.device},"
          f" {torch.get_num_threads()} threads; {params}; loaded and cached in {warm_seconds:.1f} s")
    print()
    print("| stage | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for stage, values in stages.items():
        ms = [v * 1000 for v in values]
        print(f"| {stage} | {percentile(ms, 0.5):.1f} | {percentile(ms, 0.95):.1f} | {statistics.mean(ms):.1f} |")
    print()
    print(f"throughput with {args.clients} concurrent clients (encoding included): {qps:.1f} queries/s")


if __name__ == "__main__":
    main()
