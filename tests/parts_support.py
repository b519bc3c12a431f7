"""Helpers of the kernels' tests: colpg.threads.run_parts as a pool might run it."""

from __future__ import annotations

from collections.abc import Callable

ORDERS = ["before", "after", "never"]


def parts_in_order(order: str) -> Callable[[Callable[[int], None], int], None]:
    """run_parts with the parts other than the first run before it, after it returned, or never
    (a pool thread that starts late or not at all): kernel.c's parts share the items, so each
    order must give the same result."""

    def run(work: Callable[[int], None], parts: int) -> None:
        others = range(1, parts)
        if order == "before":
            for part in others:
                work(part)
        work(0)
        if order == "after":
            for part in others:
                work(part)

    return run
