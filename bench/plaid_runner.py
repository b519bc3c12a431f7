"""Stanford ColBERT's PLAID engine (colbert-ai from PyPI) on token vectors computed elsewhere.

Runs in its own venv (colbert-ai needs transformers<5; `make bench-setup` builds it) and is
started by compare.py, under `timeout`, as

    .venv-plaid/bin/python bench/plaid_runner.py WORKDIR

WORKDIR holds tokens.npy [n_tokens, dim] (float32, or a float16 shard; memory-mapped), doclens.npy,
queries.npy [n_queries, q, dim] and params.json; the runner writes result.json there, with the process's resident memory
(RSS) before the Searcher is made and after every search ran. colbert-ai cannot be handed vectors, so
its own classes are driven with ours: the collection is the passage numbers, and its
CollectionEncoder returns our vectors for them instead of encoding text (the checkpoint folder
it insists on loading is never run). Queries go to Searcher.dense_search, which is what
Searcher.search calls after encoding. One change to its training: colbert-ai computes the
residual buckets with torch.quantile over the flattened held-out residuals, which refuses more
than 2**24 values (at dim 384 its 50,000 held-out rows are 19.2M); the held-out set is cut to
the rows that fit, a random subset since colbert-ai shuffles it first.

With ``--serve QUERIES`` (a .npy of [n, q, dim]) the runner searches a kept, finished build and
builds nothing: it reads query numbers from stdin, one per line, and answers each with a JSON line
of the search's milliseconds and passage numbers at the first setting of params.json (PLAID's own
for k=10). growth.py times PLAID so, query by query beside colpg, in one run.

With ``"keep": true`` in params.json the build stays in WORKDIR: a later run reuses a finished
one and resumes a stopped one, at its first chunk not written or at its k-means iteration. For
the latter the runner keeps what colbert-ai would not: its k-means sample (colbert-ai deletes its
sample files when the k-means starts; kept as kmeans-sample.pt) and the centroids after each
iteration (kmeans-N.npy), by running faiss one iteration at a time from the last centroids, which
gives the same centroids as one run of all the iterations. build.json keeps the build's seconds,
summed over the runs that worked on it (written every 30 s, so a killed run counts too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import torch
from colbert import Indexer, Searcher
from colbert.indexing import collection_indexer
from colbert.indexing.collection_encoder import CollectionEncoder
from colbert.indexing.collection_indexer import CollectionIndexer
from colbert.infra import ColBERTConfig, Run, RunConfig
from resident import rss_bytes  # bench/resident.py

QUANTILE_LIMIT = 2**24
CODEC_FILES = ("centroids.pt", "avg_residual.pt", "buckets.pt")
CLOCK = "build.json"  # the kept build's seconds and whether it is complete
SAMPLE = "kmeans-sample.pt"  # colbert-ai's k-means sample and held-out rows, kept for a resumed build


def feed(tokens: torch.Tensor, doclens: np.ndarray) -> None:
    """Make colbert-ai's encoder return our vectors for passage numbers."""
    offsets = np.concatenate([[0], np.cumsum(doclens)])

    def encode_passages(self: CollectionEncoder, passages: list[str]) -> tuple[torch.Tensor | None, list[int] | None]:
        if not passages:
            return None, None
        pids = [int(p) for p in passages]
        return torch.cat([tokens[offsets[p] : offsets[p + 1]] for p in pids]).float(), [int(doclens[p]) for p in pids]

    CollectionEncoder.encode_passages = encode_passages  # type: ignore[method-assign]


def resumable_kmeans(workdir: Path) -> None:
    """Make colbert-ai's k-means resumable (module docstring), and cut its held-out rows to what
    torch.quantile takes."""
    original_split = CollectionIndexer._concatenate_and_split_sample

    def split_sample(self: CollectionIndexer) -> tuple[torch.Tensor, torch.Tensor]:
        if (workdir / SAMPLE).is_file():
            return torch.load(workdir / SAMPLE)
        sample, heldout = original_split(self)
        heldout = heldout[: QUANTILE_LIMIT // heldout.shape[1] - 1]
        torch.save((sample, heldout), workdir / f"{SAMPLE}.partial")
        (workdir / f"{SAMPLE}.partial").rename(workdir / SAMPLE)
        return sample, heldout

    def kmeans(dim: int, num_partitions: int, niters: int, shared_lists: list[list[torch.Tensor]], return_value_queue: object = None) -> torch.Tensor:
        sample = shared_lists[0][0].float().numpy()
        centroids = None
        for i in range(niters):
            saved = workdir / f"kmeans-{i}.npy"
            if saved.is_file():
                centroids = np.load(saved)
                continue
            step = faiss.Kmeans(dim, num_partitions, niter=1, seed=123, verbose=True)  # colbert-ai's seed
            step.train(sample, init_centroids=centroids)
            centroids = step.centroids.copy()
            np.save(workdir / f"kmeans-{i}.partial.npy", centroids)
            (workdir / f"kmeans-{i}.partial.npy").rename(saved)
        return torch.from_numpy(centroids)

    CollectionIndexer._concatenate_and_split_sample = split_sample  # type: ignore[method-assign]
    collection_indexer.compute_faiss_kmeans = kmeans


def training_files(workdir: Path) -> list[Path]:
    """What :func:`resumable_kmeans` keeps between runs."""
    return [*workdir.glob("kmeans-*.npy"), *workdir.glob(f"{SAMPLE}*")]


def folder_bytes(path: Path) -> dict[str, int]:
    """Bytes of the index files: codes and residuals apart from everything else."""
    sizes = {"codes_residuals": 0, "other": 0}
    for file in path.iterdir():
        part = "codes_residuals" if file.name.endswith((".codes.pt", ".residuals.pt")) else "other"
        sizes[part] += file.stat().st_size
    return sizes


def build_state(workdir: Path, keep: bool = True) -> dict[str, object]:
    """build.json's record of the kept build in ``workdir`` (none when not ``keep``): its seconds so far and whether it is complete."""
    clock = workdir / CLOCK
    state: dict[str, object] = json.loads(clock.read_text()) if keep and clock.is_file() else {"seconds": 0.0, "complete": False}
    return state


def build(config: ColBERTConfig, checkpoint: str, collection: list[str], workdir: Path, keep: bool) -> tuple[Path, float]:
    """The index's folder and the build's seconds (over every run that worked on it)."""
    clock = workdir / CLOCK
    state = build_state(workdir, keep)
    folder = workdir / "experiments" / "plaid" / "indexes" / "bench"
    if state["complete"]:
        overwrite = "reuse"
    elif keep and (all((folder / name).is_file() for name in CODEC_FILES) or ((folder / "plan.json").is_file() and (workdir / SAMPLE).is_file())):
        overwrite = "resume"
    else:
        overwrite, state["seconds"] = "force_silent_overwrite", 0.0
        for path in training_files(workdir):
            path.unlink()
    earlier, started, done = state["seconds"], time.perf_counter(), threading.Event()

    def tick() -> None:
        while not done.wait(30):
            clock.write_text(json.dumps(state | {"seconds": earlier + time.perf_counter() - started}))

    threading.Thread(target=tick, daemon=True).start()
    indexer = Indexer(checkpoint=checkpoint, config=config, verbose=0)
    path = Path(indexer.index(name="bench", collection=collection, overwrite=overwrite))
    done.set()
    if overwrite != "reuse":
        state = {"seconds": earlier + time.perf_counter() - started, "complete": True}
        clock.write_text(json.dumps(state))
        for file in training_files(workdir):
            file.unlink()
    return path, state["seconds"]


def serve(searcher: Searcher, queries: torch.Tensor, k: int) -> None:
    """Answer query numbers from stdin, one per line, each with a JSON line: milliseconds and passage numbers."""
    numbers = {str(i): i for i in range(len(queries))}  # growth.py's lines; anything else (empty, "x", "²", 10**5000) is refused
    for line in sys.stdin:
        i = numbers.get(line.strip())
        if i is None:
            sys.exit(f"plaid_runner.py --serve: expected a query number from 0 to {len(queries) - 1} on each line, found {line.strip()[:40]!r}")
        begun = time.perf_counter()
        pids, _, _ = searcher.dense_search(queries[i : i + 1], k)
        print(json.dumps({"ms": 1000 * (time.perf_counter() - begun), "pids": [int(p) for p in pids]}), flush=True)


def configure(searcher: Searcher, setting: dict[str, object]) -> None:
    searcher.configure(ncells=setting["ncells"], centroid_score_threshold=setting["centroid_score_threshold"], ndocs=setting["ndocs"])


def measure(searcher: Searcher, queries: torch.Tensor, params: dict[str, object]) -> list[dict[str, object]]:
    """Each setting's passages and seconds per query, then its queries per second from concurrent clients."""
    k = params["k"]
    runs = []
    for setting in params["settings"]:
        configure(searcher, setting)

        def one(i: int) -> list[int]:
            pids, _, _ = searcher.dense_search(queries[i : i + 1], k)
            return [int(p) for p in pids]

        found, times = [], []
        for i in range(len(queries)):
            begun = time.perf_counter()
            found.append(one(i))
            times.append(time.perf_counter() - begun)
        qps_queries = min(len(queries), params["qps_queries"])
        begun = time.perf_counter()
        with ThreadPoolExecutor(params["clients"]) as pool:
            list(pool.map(one, range(qps_queries)))
        qps = qps_queries / (time.perf_counter() - begun)
        runs.append({"label": setting["label"], "found": found, "times": times, "qps": qps})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--serve", type=Path, help="queries (.npy) to search on request in a kept, finished build")
    args = parser.parse_args()
    workdir = args.workdir
    params = json.loads((workdir / "params.json").read_text())
    if args.serve is not None and not build_state(workdir)["complete"]:
        sys.exit(f"--serve needs a finished, kept build in {workdir} (build.json with complete: true); found none")
    tokens = torch.from_numpy(np.load(workdir / "tokens.npy", mmap_mode="c"))  # copy-on-write: never written
    doclens = np.load(workdir / "doclens.npy")
    queries = torch.from_numpy(np.load(args.serve or workdir / "queries.npy"))
    feed(tokens, doclens)
    resumable_kmeans(workdir)
    collection = [str(p) for p in range(len(doclens))]
    result: dict[str, object] = {"colbert_threads": torch.get_num_threads()}
    with Run().context(RunConfig(nranks=1, experiment="plaid", root=str(workdir / "experiments"), avoid_fork_if_possible=True)):
        config = ColBERTConfig(
            nbits=params["nbits"], dim=tokens.shape[1], doc_maxlen=max(int(doclens.max()), 1),
            query_maxlen=queries.shape[1], kmeans_niters=params.get("kmeans_niters", 4), avoid_fork_if_possible=True,
        )
        path, result["build_s"] = build(config, params["checkpoint"], collection, workdir, params.get("keep", False))
        result["bytes"] = folder_bytes(path)
        result["tokens"] = int(doclens.sum())
        memory = {"baseline": rss_bytes()}
        searcher = Searcher(index="bench", collection=collection, verbose=0)
        if args.serve is not None:
            configure(searcher, params["settings"][0])
            serve(searcher, queries, params["k"])
            sys.stdout.flush()
            os._exit(0)
        result["runs"] = measure(searcher, queries, params)
        memory["searched"] = rss_bytes()
        result["memory"] = memory
    (workdir / "result.json").write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # colbert-ai can leave threads behind that keep the interpreter alive


if __name__ == "__main__":
    main()
