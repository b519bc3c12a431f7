"""colpg's searcher in a process of its own, so its memory is measured as a user's service would hold it.

Started by compare.py as

    .venv/bin/python bench/colpg_runner.py WORKDIR

WORKDIR holds queries.npy [n_queries, q, dim] and params.json (database URL, index name, k,
settings, clients, queries for QPS, row-cache bytes); the runner writes result.json there:
per setting the results' external ids, each query's latency (excluding query encoding), its
stages' times and the garbage collector's (full collections counted apart), and the QPS of
concurrent clients (each setting from the same row cache: filled in document order),
and the process's resident memory (RSS, from /proc) before the index is opened, after its
resident tokens are loaded, after every search ran, and after the allocator then returned its
free heap (colpg.device.release_freed_memory).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from resident import rss_bytes  # bench/resident.py

from colpg.device import keep_freed_memory, release_freed_memory
from colpg.encoder import Encoder
from colpg.index import Index
from colpg.params import default_params

#: (generation, seconds) of each garbage collection during the query being timed.
collected: list[tuple[int, float]] = []


def clock_collections() -> None:
    """Time the garbage collector's work into ``collected`` (a query pays for the one it triggers)."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collected.append((info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(callback)


def main() -> None:
    workdir = Path(sys.argv[1])
    params = json.loads((workdir / "params.json").read_text())
    queries = torch.from_numpy(np.load(workdir / "queries.npy"))
    torch.set_grad_enabled(False)
    keep_freed_memory()  # as colpg serve does before it loads a model (two heaps that every thread shares)
    encoder = Encoder.from_pretrained(params["checkpoint"])  # what a search process holds anyway
    memory = {"baseline": rss_bytes()}
    clock_collections()
    index = Index(params["index"], url=params["url"], encoder=encoder, cache_bytes=params["cache_bytes"])
    searcher = index.searcher
    started = time.perf_counter()
    searcher.warm(rows=params["fill_cache"], progress=False)
    memory["loaded"] = rss_bytes()
    result: dict[str, object] = {"load_s": time.perf_counter() - started, "resident_bytes": searcher.resident_bytes}
    k = params["k"]
    runs = []
    for number, setting in enumerate(params["settings"]):
        if number and params["fill_cache"]:
            # Every setting starts from the same cache: otherwise a later one finds cached the rows
            # an earlier one's queries (the same queries) brought in, where the collection's rows
            # outgrow the cache (at 100k: 499 against 348 ms for the same parameters, session 15).
            searcher.cache.clear()
            searcher.warm(rows=True, progress=False)
        search_params = default_params(k).replace(
            ncells=setting.get("ncells"), nrerank=setting.get("nrerank"), margin=setting.get("margin"), slack=setting.get("slack"),
            cell_margin=setting.get("cell_margin"),
        )

        def one(vectors: torch.Tensor, search_params: object = search_params) -> list[str]:
            return [r.external_id for r in searcher.search_vectors(vectors, k, params=search_params, text=False)]

        one(queries[0])  # warm-up: connection pool, first allocations
        found, times, stages, reranked = [], [], [], []
        for vectors in queries:
            collected.clear()
            begun = time.perf_counter()
            found.append(one(vectors))
            times.append(time.perf_counter() - begun)
            full = sum(generation == 2 for generation, _ in collected)
            stages.append(dict(searcher.timings) | {"gc": sum(spent for _, spent in collected), "full collections": full})
            reranked.append(searcher.stats["reranked"])
        count = min(len(queries), params["qps_queries"])
        begun = time.perf_counter()
        with ThreadPoolExecutor(params["clients"]) as pool:
            list(pool.map(one, queries[:count]))
        qps = count / (time.perf_counter() - begun)
        probed = searcher.stats.get("ncells")  # what ncells=None resolved to for this index (colpg.params.cells_for)
        runs.append({"label": setting["label"], "params": f"{search_params}, ncells probed {probed}", "found": found,
                     "times": times, "stages": stages, "reranked": reranked, "qps": qps})
    memory["searched"] = rss_bytes()
    release_freed_memory()  # what of it is the allocator's free heap rather than data held
    memory["trimmed"] = rss_bytes()
    result |= {"runs": runs, "memory": memory, "cache_bytes": searcher.cache.bytes}
    (workdir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
