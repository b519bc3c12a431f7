"""Table 16: the probe's cells in two tiers, replayed in memory (issue #13).

    cd bench && ../.venv/bin/python tiers.py --datasets scifact nfcorpus msmarco-5k
    cd bench && ../.venv/bin/python tiers.py --datasets scifact nfcorpus msmarco-5k --scale 10000

The probe (colpg.probe) scores every token under the union of the query tokens' ``ncells``
nearest centroids against every query token, by residual table lookups: dim x nbits / 8 byte
lookups per (query token, token). Its work is cells x tokens per cell, and at the assembled 100k
(96 cells, ~400 tokens a cell) it took half of a search (137 of 277 ms, session 19). A token's
similarity is its centroid's score plus its residual's share, and the residual matters most
where the centroid is near the query token: in a cell far down every query token's list, the
tokens mostly keep a document in the running rather than order it. So, two tiers:

- **near**: the tokens of cells among some query token's ``near`` nearest are scored as today;
- **far**: the other probed cells' tokens are credited with their centroid's score alone, once
  per (document, cell): no per-token work, only the cells' document lists.

Each query: the first stage's best ``--cap`` (search's nrerank), with the padding gaps as search
adds them, then the int8 walk at search's slack (bench/probe.py, table 5's rule). Printed per
(ncells, near): recall@10 against exact MaxSim over the original float vectors; tokens scored by
residual lookups, and (document, cell) pairs credited by centroid score, per query; documents the
int8 walk scores (its depth follows the first stage's order). near = ncells is search today.
"""

from __future__ import annotations

import statistics

import torch
from middle import percentile, replay_parser, replayed
from probe import Collection, replayed_depth

from colpg.params import cells_for
from colpg.probe import IMPUTED_DISCOUNT, Probe, best_by_document, centroid_scores, floored_sum, padded_tokens
from colpg.rerank_stage import EARLY_STEP

K = 10


def tiered(
    c: Collection, query: torch.Tensor, scores: torch.Tensor, ncells: int, near: int, gaps: torch.Tensor, padded: int, cap: int
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The first stage with residuals for the ``near`` tier only: the best ``cap`` documents (slots,
    scores, best first), the tokens scored by residual lookups and the (document, cell) pairs
    credited with a centroid score. Shapes: query [q, dim]; scores [q, num_centroids]."""
    plan = Probe.of(scores, ncells)
    probed = torch.unique(plan.cells)
    close = torch.unique(plan.cells[:, :near])
    far = probed[~torch.isin(probed, close)]
    slots, best, tokens = best_by_document(query, c.codec, c.codec.query_table(query, scores), close, c.view.segments)
    pairs = torch.zeros(0, dtype=torch.int64)
    for layout in c.view.segments:
        positions, codes = layout.positions(far)
        pairs = torch.cat([pairs, torch.unique(layout.owners[positions].long() * scores.shape[1] + codes)])
    owners, cells = pairs // scores.shape[1], pairs % scores.shape[1]
    every, local = torch.unique(torch.cat([slots, owners]), return_inverse=True)
    merged = torch.full((len(every), query.shape[0]), float("-inf"))
    merged[local[: len(slots)]] = best
    credited = scores[:, cells].T.float()
    merged.scatter_reduce_(0, local[len(slots) :, None].expand(-1, query.shape[0]), credited, "amax")
    total = floored_sum(merged, plan.floor, IMPUTED_DISCOUNT) + padded * gaps[every]
    top = total.topk(min(cap, len(every)))
    return every[top.indices], top.values, tokens, len(pairs)


def tiers(c: Collection, gaps: torch.Tensor, settings: list[tuple[int, int]], cap: int, slack: float) -> None:
    print(f"\n### {c.v.name}: {len(c.v.ids):,} documents, {len(c.v.tokens):,} tokens, {c.codec.centroids.shape[0]:,} centroids,"
          f" default ncells {cells_for(len(c.v.tokens))}, the first stage's best {cap}, int8 walk at slack {slack}\n")
    print("| ncells | near | recall@10 | residual tokens, mean | far (document, cell) pairs, mean | int8 walk: documents, mean | p50 | p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for ncells, near in settings:
        recalls, tokens, pairs, walked = [], [], [], []
        for i, q in enumerate(c.queries):
            scores = centroid_scores(q, c.codec.centroids)
            docs, first, scored, credited = tiered(c, q, scores, ncells, near, gaps, padded_tokens(q, c.codec.padding), cap)
            exact = c.scores(q, docs)
            done = replayed_depth(first, exact, q.shape[0], K, slack, EARLY_STEP)
            recalls.append(c.recall(i, docs[:done][exact[:done].topk(min(K, done)).indices]))
            tokens.append(scored)
            pairs.append(credited)
            walked.append(done)
        print(f"| {ncells} | {near} | {statistics.mean(recalls):.3f} | {statistics.mean(tokens):,.0f} | {statistics.mean(pairs):,.0f}"
              f" | {statistics.mean(walked):,.0f} | {percentile(walked, 0.5):,.0f} | {percentile(walked, 0.95):,.0f} |", flush=True)


def main() -> None:
    parser = replay_parser(__doc__)
    parser.add_argument("--ncells", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--near", type=int, nargs="+", default=[32, 16, 8, 4], help="besides near = ncells (search today)")
    args = parser.parse_args()
    if min([args.cap - K + 1, args.queries, *args.ncells, *args.near, *args.scale, 1]) < 1 or not args.slack >= 0:
        parser.error(f"--cap takes at least {K} documents; --queries, --ncells, --near and --scale positive numbers; --slack 0 or more")
    settings = [(n, near) for n in args.ncells for near in [n, *sorted({m for m in args.near if m < n}, reverse=True)]]
    for collection, gaps in replayed(args.data, args.datasets, args.scale, args.queries):
        tiers(collection, gaps, settings, args.cap, args.slack)


if __name__ == "__main__":
    main()
