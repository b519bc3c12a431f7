"""Progress of long steps: a tqdm bar on a terminal, a plain line every 30 seconds in a pipe or a log.

tqdm alone either hides its bar when stderr is not a terminal, leaving a 10-minute step silent
under ``| cat`` or a service manager, or redraws it with carriage returns that pile up as one
line. Piped, each update here is a line of its own, with count, rate and ETA.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["PIPED_INTERVAL_S", "bar"]

#: Seconds between progress lines when stderr is not a terminal (tqdm's first and last always print).
PIPED_INTERVAL_S = 30.0


class _Lines:
    """A file for tqdm that turns each redraw into one line on stderr."""

    def __init__(self) -> None:
        self.last = ""

    def write(self, text: str) -> int:
        line = text.strip("\r\n ")
        if line and line != self.last:  # closing redraws the last state once more
            sys.stderr.write(line + "\n")
            self.last = line
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


def bar(iterable: Iterable[Any] | None = None, *, show: bool | None = None, **options: Any) -> tqdm:
    """A progress bar over ``iterable`` (or updated by hand); ``show`` False hides it, True or None
    shows it: redrawn on a terminal, as lines every :data:`PIPED_INTERVAL_S` elsewhere."""
    if show is False:
        return tqdm(iterable, disable=True, **options)
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    return tqdm(iterable, file=_Lines(), mininterval=PIPED_INTERVAL_S, maxinterval=PIPED_INTERVAL_S, ascii=True, ncols=100, **options)
