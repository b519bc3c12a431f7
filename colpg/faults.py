"""Which database failures a long-running process waits out, and how long it waits between tries.

A worker should outlive what an operator does to the server (a restart, a full disk, a switch
to read-only, an index rebuilt under it) and resume by itself once the server is usable again;
it should still stop on what waiting cannot fix (a missing schema, a refused permission, a bug).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg

from colpg.errors import DatabaseUnavailable

__all__ = ["Backoff", "transient_reason"]

#: SQLSTATE classes that pass: connection exceptions, transaction rollbacks (serialization,
#: deadlock), insufficient resources (disk full, out of memory, too many connections),
#: operator intervention (shutdown, crash, restart), system errors (I/O) and internal errors
#: (``could not extend file``: the error a file-size limit gives).
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58", "XX"})
#: Single SQLSTATEs that pass: a read-only server (25006) and a foreign key whose parent a
#: concurrent rebuild or drop just removed (23503).
TRANSIENT_STATES = frozenset({"25006", "23503"})


def transient_reason(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` is worth waiting out; None when it is not.

    The reason holds the SQLSTATE and the server's first message line: never a URL or password.
    """
    if isinstance(exc, DatabaseUnavailable):
        return str(exc).splitlines()[0]
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection broke or never opened
        return f"connection lost: {_first_line(exc)}" if isinstance(exc, psycopg.OperationalError) else None
    if state[:2] in TRANSIENT_CLASSES or state in TRANSIENT_STATES:
        return f"{state} {exc.diag.message_primary or _first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: try ``n`` waits about ``first_s * 2**(n-1)``, at most ``cap_s``.

    The jitter (each wait drawn between half and all of its step) keeps several workers that
    lost the same server from reconnecting in lockstep.
    """

    first_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th consecutive failure (1 for the first)."""
        step = min(self.cap_s, self.first_s * 2 ** min(attempt - 1, 32))
        return random.uniform(step / 2, step)
