"""How the HTTP service answers failures: always JSON ``{"detail": ...}``, never a bare 500.

404 an unknown index or document; 422 bad input (malformed, empty, an id already present,
including one added concurrently); 503 with ``Retry-After`` while the database cannot be
reached; 500 with a generic message, the error logged, for anything else (a bug: no input
should get there).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from colpg.errors import ConfigurationError, DatabaseUnavailable, DocumentError, DocumentNotFound, EncodingError, IndexNotFound
from colpg.index import REPLACE_HINT

__all__ = ["RETRY_AFTER_S", "LastResort", "install_error_handlers", "unavailable_reason"]

RETRY_AFTER_S = 5

logger = logging.getLogger(__name__)


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database cannot be used when ``exc`` says it is unreachable or dropped the connection, else None."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return _one_line(exc.orig or exc)
        return unavailable_reason(exc.orig) if exc.orig is not None else None
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _unique_violation(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return isinstance(orig, psycopg.errors.UniqueViolation)


def _json(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _printable(value: Any) -> Any:
    """A field name or key as JSON can carry it (a lone surrogate in a key is escaped, not sent)."""
    return value if isinstance(value, int) else str(value).encode("utf-8", "backslashreplace").decode()


def install_error_handlers(app: FastAPI) -> None:
    """Register the service's error responses on ``app``."""

    for missing in (IndexNotFound, DocumentNotFound):

        @app.exception_handler(missing)
        def not_found(_: Request, exc: Exception) -> JSONResponse:
            return _json(404, str(exc))

    for error in (ConfigurationError, DocumentError, EncodingError):

        @app.exception_handler(error)
        def bad_input(_: Request, exc: Exception) -> JSONResponse:
            return _json(422, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each input back: a 1 MB id, or a lone surrogate JSON cannot encode.
        errors = [{"loc": [_printable(p) for p in e["loc"]], "msg": _printable(e["msg"]), "type": e["type"]} for e in exc.errors()]
        return _json(422, errors)

    for database_error in (DatabaseUnavailable, psycopg.Error, sa.exc.DBAPIError):

        @app.exception_handler(database_error)
        def database_failed(request: Request, exc: Exception) -> JSONResponse:
            if _unique_violation(exc):
                return _json(422, f"a document with one of these ids was added at the same time by another request; {REPLACE_HINT}")
            reason = unavailable_reason(exc)
            if reason is None:
                raise exc  # not the database being away: a bug, for LastResort
            logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, reason)
            return _json(503, f"the database is unavailable, retry later: {reason}", {"Retry-After": str(RETRY_AFTER_S)})


class LastResort:
    """Pure ASGI middleware: any exception no handler took becomes a logged JSON 500, and the connection stays usable.

    (Starlette's own last handler re-raises after answering, and the server then drops the connection.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _json(500, "internal error; the service logged it")(scope, receive, send)
