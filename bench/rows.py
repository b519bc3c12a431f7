"""What the search process pays to read token rows from PostgreSQL, stage by stage, old way beside new.

    cd bench && ../.venv/bin/python rows.py --database colpg_bench_keep_assembled_100000_12932802

On an index already built (compare.py --keep-databases keeps its collections'), per step of
``--step`` documents drawn at random (the rerank's early-stop step, colpg.rerank_stage), each
read ``--repeat`` times so that the server's pages are warm as in a running service, the best
of the repeats:

- **rerank rows**: ``search_rerank_rows`` in text results (bytea as hex, psycopg's default) and
  in binary results (what colpg.rerank_stage asks for); the rows turned into the store's raw
  tensors one by one (``RerankStore.raw``, PyTorch) and all at once (``RerankStore.raws``) in
  PyTorch and in C (colpg.int8_kernel, int8 stores); and their MaxSim with a 32-token query
  (``RerankStore.maxsims``, what search scores with) in PyTorch and in C, in float and in
  integers (colpg.int8_kernel.maxsim_scorer's two kernels);
- **a rerank's steps**: every step read (binary, ``raws``) and scored one after the other, as
  search does (in PyTorch, and with the kernels where they apply), against reading ahead on a thread: the next step read (or only fetched, converted
  by the caller) while this one is scored, per step;
- **token rows**: ``search_tokens`` (what a search reads of changed documents, and the view's
  load reads of every document) in text and in binary results.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import torch
from sqlalchemy.engine import make_url

from colpg import db, int8_kernel, store
from colpg.native import KERNEL_ENV
from colpg.rerank_stage import EARLY_STEP, ROW_COLUMNS
from colpg.resources import query as sql
from colpg.stores import Int8Store, RerankStore

T = TypeVar("T")


def best_ms(call: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls, in ms."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def read_ahead(read: Callable[[list[int]], T], steps: Sequence[list[int]]) -> Iterator[T]:
    """``read`` of each step, the next one read on a thread while the caller works on this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[T] = pool.submit(read, steps[0])
        for following in [*steps[1:], None]:
            current = pending.result()
            if following is not None:
                pending = pool.submit(read, following)
            yield current


def rerank_rows(pg: psycopg.Connection[Any], rerank: RerankStore, ids: list[int], binary: bool) -> list[dict[str, Any]]:
    fetched = pg.execute(sql("search_rerank_rows"), {"ids": ids, **rerank.wanted()}, binary=binary).fetchall()
    return [dict(zip(ROW_COLUMNS, row, strict=True)) for row in fetched]


def kernel(on: bool, call: Callable[[], T]) -> Callable[[], T]:
    """``call`` with colpg's CPU kernels on or off ($COLPG_KERNEL, colpg.native)."""

    def switched() -> T:
        before = os.environ.get(KERNEL_ENV)
        os.environ[KERNEL_ENV] = "on" if on else "off"
        try:
            return call()
        finally:  # the caller's own setting back
            if before is None:
                del os.environ[KERNEL_ENV]
            else:
                os.environ[KERNEL_ENV] = before

    return switched


def kernel_maxsim(rerank: RerankStore, query: torch.Tensor, raws: list[torch.Tensor], integer: bool) -> Callable[[], object]:
    """colpg.int8_kernel's MaxSim in float or in integers (where the CPU has them; else nothing to time)."""
    lib = int8_kernel.int8_kernel(query.shape[1])
    if not isinstance(rerank, Int8Store) or lib is None or (integer and not int8_kernel.integer_kernel(lib)):
        return lambda: None
    scorer = int8_kernel.maxsim_scorer(lib, query * rerank.codec.scales / 127, integer)
    return lambda: scorer(raws)


def step_calls(
    pg: psycopg.Connection[Any],
    rerank: RerankStore,
    query: torch.Tensor,
    step: list[int],
    records: list[dict[str, Any]],
    raws: list[torch.Tensor],
) -> dict[str, Callable[[], object]]:
    """What is timed of one step, by column."""
    return {
        "text rows": lambda: rerank_rows(pg, rerank, step, binary=False),
        "binary rows": lambda: rerank_rows(pg, rerank, step, binary=True),
        "raw one by one": kernel(False, lambda: [rerank.raw(r) for r in records]),
        "raws at once, PyTorch": kernel(False, lambda: rerank.raws(records)),
        "raws at once, C": kernel(True, lambda: rerank.raws(records)),
        "MaxSim, PyTorch": kernel(False, lambda: rerank.maxsims(query)[0](raws)),
        "MaxSim, C in float": kernel_maxsim(rerank, query, raws, integer=False),
        "MaxSim, C in integers": kernel_maxsim(rerank, query, raws, integer=True),
        "text tokens": lambda: pg.execute(sql("search_tokens"), {"ids": step}).fetchall(),
        "binary tokens": lambda: pg.execute(sql("search_tokens"), {"ids": step}, binary=True).fetchall(),
    }


def measure(pg: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    first = pg.execute("SELECT name FROM colpg.indexes ORDER BY id LIMIT 1").fetchone()
    name = args.index or (first[0] if first else None)
    if name is None:
        raise SystemExit(f"database {make_url(args.url).database!r} holds no colpg index: build one first (compare.py --keep-databases)")
    record = store.get_index(pg, name)
    _, rerank = store.load_codec(pg, record, torch.device("cpu"))
    ids = [row[0] for row in pg.execute("SELECT id FROM colpg.documents WHERE index_id = %s", (record.id,)).fetchall()]
    if not ids:
        raise SystemExit(f"index {name!r} holds no documents: nothing to read")
    query = torch.nn.functional.normalize(torch.randn(32, record.dim), dim=1)
    scorer = rerank.maxsims(query)[0]
    draw = random.Random(args.seed)
    columns: tuple[str, ...] = (
        "text rows", "binary rows", "raw one by one", "raws at once, PyTorch", "raws at once, C", "MaxSim, PyTorch",
        "MaxSim, C in float", "MaxSim, C in integers",
        "text tokens", "binary tokens",
    )  # fmt: skip
    times: dict[str, list[float]] = {column: [] for column in columns}
    tokens = []
    for _ in range(args.steps):
        step = draw.sample(ids, min(args.step, len(ids)))
        records = rerank_rows(pg, rerank, step, binary=True)
        raws = rerank.raws(records)
        assert all(torch.equal(a[:, : record.dim], rerank.raw(r)[:, : record.dim]) for a, r in zip(raws, records, strict=True))
        tokens.append(sum(r["ntokens"] for r in records))
        timed = step_calls(pg, rerank, query, step, records, raws)
        for column, call in timed.items():
            times[column].append(best_ms(call, args.repeat))
    steps = [draw.sample(ids, min(args.step, len(ids))) for _ in range(args.steps)]

    def read(step: list[int]) -> list[torch.Tensor]:
        return rerank.raws(rerank_rows(pg, rerank, step, binary=True))

    pipelines = {
        "read, then scored, PyTorch": kernel(False, lambda: [rerank.maxsims(query)[0](read(step)) for step in steps]),
        "read, then scored": lambda: [scorer(read(step)) for step in steps],
        "next read while scored": lambda: [scorer(raws) for raws in read_ahead(read, steps)],
        "next fetched while converted and scored": lambda: [
            scorer(rerank.raws(records)) for records in read_ahead(lambda step: rerank_rows(pg, rerank, step, binary=True), steps)
        ],
    }
    for column, call in pipelines.items():
        columns += (column,)
        times[column] = [best_ms(call, args.repeat) / len(steps)]
    print(f"\n### {make_url(args.url).database}, index {name!r} ({rerank.kind} store): {args.steps} steps of {args.step} documents,"
          f" {statistics.mean(tokens):,.0f} tokens a step on average, ms a step (p50 / mean)\n")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    print("| " + " | ".join(f"{statistics.median(times[c]):.1f} / {statistics.mean(times[c]):.1f}" for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="the server (default: colpg's, $COLPG_DATABASE_URL or the embedded one)")
    parser.add_argument("--database", default=None, help="the database on --url's server holding the index")
    parser.add_argument("--index", default=None, help="the index (default: the database's first)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step", type=int, default=EARLY_STEP, help="documents read at once")
    parser.add_argument("--repeat", type=int, default=3, help="reads of each step; the best counts")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args()
    for name in ("steps", "step", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    args.url = args.url or db.database_url()
    if args.database:
        args.url = make_url(args.url).set(database=args.database).render_as_string(hide_password=False)
    with db.connect(args.url) as pg:
        measure(pg, args)


if __name__ == "__main__":
    main()
