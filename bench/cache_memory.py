"""What a row-cache entry holds beyond its token bytes: the figure behind colpg.rowcache.ENTRY_OVERHEAD.

    cd bench && ../.venv/bin/python cache_memory.py

For each row length (tokens of ``dim + 4`` bytes, an int8 store's raw rows at the given
dimension), a fresh process fills a :class:`colpg.rowcache.RowCache` with ``--bytes`` of such
rows, made as the rerank makes them (one tensor a document, colpg.int8_kernel.raws' layout),
hands its free heap back, and reports what its resident memory gained: the token bytes, and per
entry what is left over (the tensor's and its storage's objects, the cache's dictionary entry,
the allocator's headers and alignment). The cache counts that overhead against its cap, so that
the cap bounds the memory the cache holds (issue 13's bound: codes+residuals + the cap).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from resident import rss_bytes  # bench/resident.py

from colpg.device import keep_freed_memory, release_freed_memory
from colpg.rowcache import ENTRY_OVERHEAD, RowCache


def fill(tokens: int, dim: int, total: int) -> dict[str, float]:
    """Fill a cache counting no overhead with ``total`` bytes of ``tokens``-token rows; what RSS gained."""
    keep_freed_memory()  # as colpg serve and bench/colpg_runner.py do
    release_freed_memory()
    before = rss_bytes()
    cache = RowCache(max_bytes=1 << 62, entry_overhead=0)
    width = dim + 4
    entries = total // (tokens * width)
    for document_id in range(entries):
        cache.put(document_id, 1, torch.empty(tokens, width, dtype=torch.uint8).fill_(document_id % 251))
    release_freed_memory()
    gained = rss_bytes() - before
    return {"entries": entries, "data": cache.bytes, "gained": gained, "per_entry": (gained - cache.bytes) / entries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 128, 512], help="tokens a row")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--bytes", type=int, default=256 << 20, help="token bytes cached per run")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min([args.dim, args.bytes, *args.tokens]) < 1:
        parser.error("--tokens, --dim and --bytes must be positive")
    if args.bytes < max(args.tokens) * (args.dim + 4):
        parser.error(f"--bytes {args.bytes} holds no row of {max(args.tokens)} tokens ({max(args.tokens) * (args.dim + 4)} bytes)")
    if args.child is not None:
        print(json.dumps(fill(args.child, args.dim, args.bytes)))
        return
    print(f"colpg.rowcache.ENTRY_OVERHEAD = {ENTRY_OVERHEAD} bytes; each run a fresh process, {args.bytes >> 20} MiB of token bytes\n")
    print("| tokens a row | row bytes | entries | token MiB | RSS gained MiB | overhead bytes an entry |")
    print("|---|---|---|---|---|---|")
    for tokens in args.tokens:
        run = [sys.executable, __file__, "--child", str(tokens), "--dim", str(args.dim), "--bytes", str(args.bytes)]
        result = json.loads(subprocess.run(run, check=True, capture_output=True, text=True).stdout)
        print(
            f"| {tokens} | {tokens * (args.dim + 4):,} | {result['entries']:,} | {result['data'] / 2**20:,.1f} | "
            f"{result['gained'] / 2**20:,.1f} | {result['per_entry']:,.0f} |"
        )


if __name__ == "__main__":
    main()
