"""Evaluation on BEIR-layout datasets: quality on the qrels, and agreement with exact search.

Two exact references tell the losses apart: exact MaxSim over the stored tokens (what the
index can do at best, so the gap to it is pruning loss) and exact MaxSim over the
encoder's original float vectors (the gap to it adds compression loss).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from colpg.collection import read_lines
from colpg.errors import ConfigurationError
from colpg.index import Index
from colpg.params import default_params
from colpg.progress import bar as progress_bar
from colpg.scoring import maxsim_flat, owners

__all__ = ["EvalReport", "brute_force", "evaluate", "quality", "read_qrels", "read_queries"]

QUERY_BATCH = 32


def read_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl: ``{_id: text}``."""
    if not path.is_file():
        raise ConfigurationError(f"{path} not found; expected a BEIR dataset folder with queries.jsonl and qrels.tsv")
    queries = {}
    for line in read_lines(path):
        if line.strip():
            item = json.loads(line)
            queries[str(item["_id"])] = item["text"]
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels.tsv (header ``query-id corpus-id score``): ``{query: {document: relevance}}``."""
    if not path.is_file():
        raise ConfigurationError(f"{path} not found; expected a BEIR dataset folder with queries.jsonl and qrels.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def quality(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10, MRR@10 and R@100 of ``run`` ({query: {document: score}}) by ir-measures."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measures = ir_measures.calc_aggregate([nDCG @ 10, RR @ 10, R @ 100], qrels, run)
    return {"nDCG@10": measures[nDCG @ 10], "MRR@10": measures[RR @ 10], "R@100": measures[R @ 100]}


def _overlap(approx: dict[str, list[str]], exact: dict[str, list[str]], k: int) -> float:
    shares = [len(set(approx[q][:k]) & set(exact[q][:k])) / max(1, min(k, len(exact[q]))) for q in exact]
    return sum(shares) / max(1, len(shares))


def _ranking(run: dict[str, float]) -> list[str]:
    return sorted(run, key=lambda document: -run[document])


def brute_force(queries: torch.Tensor, ids: Sequence[str], documents: Sequence[torch.Tensor], depth: int) -> list[dict[str, float]]:
    """Exact MaxSim of every query against every document. Shapes: queries [n, q, dim]; documents[i] [t_i, dim]."""
    tokens = torch.cat(list(documents))
    owner = owners([len(d) for d in documents], tokens.device)
    results = []
    for start in progress_bar(range(0, len(queries), QUERY_BATCH), desc="exact MaxSim", unit=" batches"):
        scores = maxsim_flat(queries[start : start + QUERY_BATCH].to(tokens.device), tokens, owner, len(ids))
        top = scores.topk(min(depth, len(ids)), dim=1)
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            results.append({ids[i]: v for i, v in zip(indices, values, strict=True)})
    return results


@dataclass
class EvalReport:
    """Quality and agreement figures of one evaluation."""

    queries: int
    k: int
    approximate: dict[str, float]
    search_ms_p50: float
    exact_stored: dict[str, float] = field(default_factory=dict)
    exact_original: dict[str, float] = field(default_factory=dict)
    recall_vs_exact_stored: float | None = None
    recall_vs_exact_original: float | None = None
    #: Of the documents the evaluated queries judge relevant, how many the index holds.
    judged_indexed: int = 0
    judged: int = 0

    def coverage_warning(self) -> str | None:
        """A warning when the index lacks judged documents, which no search can find (its figures drop with them)."""
        if self.judged_indexed >= self.judged:
            return None
        return (
            f"warning: the index holds {self.judged_indexed:,} of the {self.judged:,} documents these queries judge relevant;"
            " the figures count the missing ones as not found (index the dataset's whole corpus.jsonl)"
        )


def _search_all(
    index: Index, qids: Sequence[str], encoded: torch.Tensor, depth: int, stages: dict[str, Any]
) -> tuple[dict[str, dict[str, float]], float]:
    """The approximate run for ``depth`` (stage sizes: defaults, or ``stages``), and its median latency (ms, excluding encoding)."""
    searcher = index.searcher
    params = default_params(depth).replace(**stages)
    run, times = {}, []
    for qid, vectors in progress_bar(zip(qids, encoded, strict=True), total=len(qids), desc=f"searching, top {depth}", unit=" queries"):
        started = time.perf_counter()
        ranked = searcher.search_vectors(vectors, depth, params=params, text=False)
        times.append(time.perf_counter() - started)
        run[qid] = {r.external_id: r.score for r in ranked}
    return run, sorted(times)[len(times) // 2] * 1000


def evaluate(
    index: Index,
    dataset: Path,
    *,
    k: int = 10,
    vs_exact: bool = False,
    max_queries: int | None = None,
    ncells: int | None = None,
    nrerank: int | None = None,
    margin: float | None = None,
    slack: float | None = None,
    residual: bool | None = None,
    cell_margin: float | None = None,
) -> EvalReport:
    """Search every judged query of ``dataset`` (BEIR layout) and score the runs with ir-measures.

    nDCG@10 and MRR@10 come from the run at depth ``k``, R@100 from a run at depth 100;
    ``ncells``, ``nrerank``, ``margin``, ``slack``, ``residual`` and ``cell_margin`` override the search's parameters in both.
    """
    queries = read_queries(dataset / "queries.jsonl")
    qrels = read_qrels(dataset / "qrels.tsv")
    qids = [q for q in queries if q in qrels][:max_queries]
    encoded = index.encoder.encode_queries([queries[q] for q in qids])
    index.searcher.warm(rows=True)  # once, so the timed runs find the resident tokens loaded and the row cache filled
    stages = {"ncells": ncells, "nrerank": nrerank, "margin": margin, "slack": slack, "residual": residual, "cell_margin": cell_margin}
    at_k, p50 = _search_all(index, qids, encoded, k, stages)
    deep = at_k if k >= 100 else _search_all(index, qids, encoded, 100, stages)[0]
    approximate = quality(at_k, qrels) | {"R@100": quality(deep, qrels)["R@100"]}
    judged = {d for q in qids for d, grade in qrels[q].items() if grade > 0}
    report = EvalReport(
        queries=len(qids), k=k, approximate=approximate, search_ms_p50=p50, judged=len(judged), judged_indexed=len(index.ids(judged))
    )
    if not vs_exact:
        return report

    ids, texts, stored_tokens = index.searcher.stored_documents()
    stored = dict(zip(qids, brute_force(encoded, ids, stored_tokens, 100), strict=True))
    del stored_tokens
    original_tokens = index.encoder.encode_documents(texts)
    original = dict(zip(qids, brute_force(encoded, ids, original_tokens, 100), strict=True))
    approx_ranking = {q: _ranking(r) for q, r in at_k.items()}
    report.exact_stored = quality(stored, qrels)
    report.exact_original = quality(original, qrels)
    report.recall_vs_exact_stored = _overlap(approx_ranking, {q: _ranking(r) for q, r in stored.items()}, k)
    report.recall_vs_exact_original = _overlap(approx_ranking, {q: _ranking(r) for q, r in original.items()}, k)
    return report
